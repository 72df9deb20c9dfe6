use proptest::prelude::*;

use super::*;
use crate::gguf::GgmlType;
use crate::settings::{
    CtxSize, FitTarget, FlashAttn, GpuLayers, OverrideTarget, Parallel, ServerSettings, SplitMode,
};
use crate::units::Bytes;

/// The example models.conf of the brief (shared/examples/models.conf).
const EXAMPLE: &str = include_str!("../../../fixtures/models.conf");

fn conf() -> ModelsConf {
    parse(EXAMPLE).unwrap()
}

fn settings(id: &str) -> ServerSettings {
    conf().find(id).unwrap().server_settings().unwrap()
}

fn overrides(s: &ServerSettings) -> Vec<String> {
    s.overrides.iter().map(ToString::to_string).collect()
}

/// What every profile of the example gets from the container unless it says otherwise.
fn container_defaults(model: &str) -> ServerSettings {
    ServerSettings {
        model: Some(format!("/models/{model}")),
        ctx_size: CtxSize::Tokens(131_072),
        flash_attn: FlashAttn::On,
        cache_type_k: GgmlType::Q8_0,
        cache_type_v: GgmlType::Q8_0,
        fit_target: FitTarget::per_device(vec![Bytes::from_mib(128)]),
        ..ServerSettings::default()
    }
}

#[test]
fn keeps_every_byte() {
    let c = conf();
    assert_eq!(c.text(), EXAMPLE);
    let crlf = EXAMPLE.replace('\n', "\r\n");
    assert_eq!(parse(&crlf).unwrap().text(), crlf);
    let unterminated = EXAMPLE.trim_end();
    assert_eq!(parse(unterminated).unwrap().text(), unterminated);
    assert!(parse("").unwrap().lines().is_empty());
    let mut offset = 0;
    for line in c.lines() {
        assert_eq!(line.start, offset);
        offset = line.end();
    }
    assert_eq!(offset, EXAMPLE.len());
}

#[test]
fn profiles_keys_and_lines() {
    let c = conf();
    let ids: Vec<&str> = c.profiles().iter().map(|p| p.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "glm-flash-q4",
            "glm-flash-q8",
            "gpt-oss-120b",
            "qwen3-coder-ud-q5",
            "bench-glm-flash-q8",
            "bench-qwen3-coder-ud-q5"
        ]
    );
    let q5 = c.find("qwen3-coder-ud-q5").unwrap();
    assert_eq!(q5.line, 50);
    assert_eq!(q5.lines(), 50..=58);
    let keys: Vec<&str> = q5.entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        ["NAME", "DESCRIPTION", "SPEED", "MODEL", "CTX_SIZE", "N_GPU_LAYERS", "FIT", "EXTRA_ARGS"]
    );
    assert_eq!(q5.entry("CTX_SIZE").map(|e| e.line), Some(55));
    assert_eq!(
        q5.model_path(),
        "Qwen3-Coder-Next/UD-Q5_K_XL/Qwen3-Coder-Next-UD-Q5_K_XL-00001-of-00003.gguf"
    );
    assert_eq!(q5.name(), Some("Qwen3-Coder-Next UD-Q5_K_XL"));
    assert_eq!(q5.description(), Some("Coding agents, agentic tasks"));
    // The comment above a profile is not part of it.
    assert_eq!(c.find("glm-flash-q4").unwrap().line, 15);
    assert_eq!(c.lines()[13].kind, LineKind::Comment);

    let inactive: Vec<&str> = c.inactive().iter().map(|p| p.id.as_str()).collect();
    assert_eq!(inactive, ["qwen3-coder-ud-q6"]);
    let q6 = &c.inactive()[0];
    assert_eq!((q6.line, q6.last_line), (61, 65));
    let keys: Vec<&str> = q6.entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["NAME", "MODEL", "CTX_SIZE", "EXTRA_ARGS"]);
}

#[test]
fn argv_exactly_as_the_container_builds_it() {
    let q5 = conf().find("qwen3-coder-ud-q5").unwrap().server_args();
    assert_eq!(
        q5,
        [
            "--model",
            "/models/Qwen3-Coder-Next/UD-Q5_K_XL/Qwen3-Coder-Next-UD-Q5_K_XL-00001-of-00003.gguf",
            "--ctx-size",
            "262144",
            "--n-gpu-layers",
            "99",
            "--host",
            "0.0.0.0",
            "--port",
            "8080",
            "--split-mode",
            "layer",
            "--main-gpu",
            "0",
            "--flash-attn",
            "on",
            "--cache-type-k",
            "q8_0",
            "--cache-type-v",
            "q8_0",
            "--fit",
            "off",
            "--fit-target",
            "128,1024",
            "--jinja",
            "-np",
            "1",
            "-b",
            "2048",
            "-ub",
            "512",
            "--no-context-shift",
            "--temp",
            "1.0",
            "--top-p",
            "0.95",
            "--top-k",
            "40",
            "--min-p",
            "0.01",
            "-ot",
            r"blk\.([0-9]|1[0-6])\.=CUDA0,blk\.(1[7-9]|2[0-4])\.=CUDA1,exps=CPU",
        ]
    );
    // Absent keys take the container's defaults; N_GPU_LAYERS is always passed.
    let bench = conf().find("bench-qwen3-coder-ud-q5").unwrap().server_args().join(" ");
    assert_eq!(
        bench,
        "--model /models/Qwen3-Coder-Next/UD-Q5_K_XL/Qwen3-Coder-Next-UD-Q5_K_XL-00001-of-00003.gguf \
         --ctx-size 10240 --n-gpu-layers auto --host 0.0.0.0 --port 8080 --split-mode layer --main-gpu 0 \
         --flash-attn on --cache-type-k q8_0 --cache-type-v q8_0 --fit on --fit-target 128,1024 \
         --jinja -np 1 -b 512 -ub 512 --no-context-shift"
    );
}

#[test]
fn optional_keys_of_the_container() {
    let text = "[p]\nMODEL=m.gguf\nTENSOR_SPLIT=3,1\nFLASH_ATTN=0\nKV_CACHE_TYPE_K=f16\nKV_CACHE_TYPE_V=f16\n\
                FIT_TARGET=512\nFIT_CTX=16384\nSPLIT_MODE=none\nMAIN_GPU=1\nCTX_SIZE=\n";
    let p = parse(text).unwrap().profiles()[0].clone();
    assert_eq!(
        p.server_args().join(" "),
        "--model /models/m.gguf --ctx-size 131072 --n-gpu-layers auto --host 0.0.0.0 --port 8080 \
         --split-mode none --tensor-split 3,1 --main-gpu 1 --cache-type-k f16 --cache-type-v f16 --fit on \
         --fit-target 512 --fit-ctx 16384"
    );
    let s = p.server_settings().unwrap();
    assert_eq!(s.flash_attn, FlashAttn::Auto, "FLASH_ATTN other than 1 passes nothing");
    assert_eq!(s.fit_target, FitTarget::uniform(Bytes::from_mib(512)));
    assert_eq!((s.split_mode, s.main_gpu, s.fit_ctx), (SplitMode::None, 1, 16_384));
}

#[test]
fn every_profile_of_the_example_as_settings() {
    let ot = |items: &[&str]| -> Vec<String> { items.iter().map(|s| (*s).to_string()).collect() };

    let glm_q4 = settings("glm-flash-q4");
    assert_eq!(
        glm_q4,
        ServerSettings {
            parallel: Parallel::Slots(1),
            split_mode: SplitMode::None,
            ..container_defaults("GLM-4.7-Flash/GLM-4.7-Flash-Q4_K_M.gguf")
        }
    );

    let glm_q8 = settings("glm-flash-q8");
    assert_eq!(
        overrides(&glm_q8),
        ot(&[r"blk\.([0-9]|[12][0-9]|3[0-2])\.=CUDA0", r"blk\.(3[3-9]|4[0-6])\.=CUDA1"])
    );
    assert_eq!(
        glm_q8,
        ServerSettings {
            n_gpu_layers: GpuLayers::Count(99),
            fit: false,
            parallel: Parallel::Slots(1),
            overrides: glm_q8.overrides.clone(),
            ..container_defaults("GLM-4.7-Flash/GLM-4.7-Flash-Q8_0.gguf")
        }
    );

    let oss = settings("gpt-oss-120b");
    assert_eq!(overrides(&oss), ot(&[r"blk\.([0-9]|10)\.=CUDA0", r"blk\.(1[1-4])\.=CUDA1", "exps=CPU"]));
    assert_eq!(
        oss,
        ServerSettings {
            n_gpu_layers: GpuLayers::Count(99),
            fit: false,
            parallel: Parallel::Slots(1),
            overrides: oss.overrides.clone(),
            ..container_defaults("GPT-OSS-120b/gpt-oss-120b-F16.gguf")
        }
    );

    let q5 = settings("qwen3-coder-ud-q5");
    assert_eq!(q5.ctx_size, CtxSize::Tokens(262_144));
    assert_eq!(q5.n_gpu_layers, GpuLayers::Count(99));
    assert!(!q5.fit);
    assert_eq!((q5.batch_size, q5.ubatch_size), (2048, 512));
    assert_eq!(
        (q5.cache_type_k, q5.cache_type_v, q5.flash_attn),
        (GgmlType::Q8_0, GgmlType::Q8_0, FlashAttn::On)
    );
    assert_eq!(
        overrides(&q5),
        ot(&[r"blk\.([0-9]|1[0-6])\.=CUDA0", r"blk\.(1[7-9]|2[0-4])\.=CUDA1", "exps=CPU"])
    );
    assert_eq!(q5.overrides[2].target, OverrideTarget::Cpu);
    assert_eq!(
        q5,
        ServerSettings {
            ctx_size: CtxSize::Tokens(262_144),
            n_gpu_layers: GpuLayers::Count(99),
            fit: false,
            parallel: Parallel::Slots(1),
            overrides: q5.overrides.clone(),
            ..container_defaults(
                "Qwen3-Coder-Next/UD-Q5_K_XL/Qwen3-Coder-Next-UD-Q5_K_XL-00001-of-00003.gguf"
            )
        }
    );

    let bench_glm = settings("bench-glm-flash-q8");
    assert_eq!(
        overrides(&bench_glm),
        ot(&[r"blk\.([0-9]|[12][0-9]|3[0-4])\.=CUDA0", r"blk\.(3[5-9]|4[0-6])\.=CUDA1"])
    );
    assert_eq!(
        bench_glm,
        ServerSettings {
            ctx_size: CtxSize::Tokens(10_240),
            n_gpu_layers: GpuLayers::Count(99),
            fit: false,
            batch_size: 512,
            parallel: Parallel::Slots(1),
            overrides: bench_glm.overrides.clone(),
            ..container_defaults("GLM-4.7-Flash/GLM-4.7-Flash-Q8_0.gguf")
        }
    );

    assert_eq!(
        settings("bench-qwen3-coder-ud-q5"),
        ServerSettings {
            ctx_size: CtxSize::Tokens(10_240),
            batch_size: 512,
            parallel: Parallel::Slots(1),
            ..container_defaults(
                "Qwen3-Coder-Next/UD-Q5_K_XL/Qwen3-Coder-Next-UD-Q5_K_XL-00001-of-00003.gguf"
            )
        }
    );
}

#[test]
fn extra_args_override_keys_and_add_overrides() {
    let text = "[p]\nMODEL=m.gguf\nCTX_SIZE=8192\nEXTRA_ARGS=-c 4096 -ot a=CPU --cpu-moe -ot b=CUDA0 --fit-target 64\n";
    let s = parse(text).unwrap().profiles()[0].server_settings().unwrap();
    assert_eq!(s.ctx_size, CtxSize::Tokens(4096));
    assert_eq!(overrides(&s), ["a=CPU", r"\.ffn_(up|down|gate|gate_up)_(ch|)exps=CPU", "b=CUDA0"]);
    assert_eq!(s.fit_target, FitTarget::uniform(Bytes::from_mib(64)));
}

// One test per rejection path.

#[test]
fn rejects_a_malformed_line() {
    let e = parse("[p]\nMODEL=m.gguf\njust words\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 3: expected [profile], KEY=VALUE, a # comment or a blank line, found \"just words\""
    );
    assert!(matches!(parse("[p]\nMODEL=m\nBAD KEY=1\n"), Err(ProfileError::MalformedLine { line: 3, .. })));
}

#[test]
fn rejects_a_malformed_section() {
    for bad in ["[]", "[a b]", "[open", "[a]]"] {
        assert!(matches!(parse(bad), Err(ProfileError::MalformedLine { line: 1, .. })), "{bad}");
    }
}

#[test]
fn rejects_a_duplicate_profile() {
    let e = parse("[p]\nMODEL=a\n\n[p]\nMODEL=b\n").unwrap_err();
    assert_eq!(e.to_string(), "line 4: profile [p] is defined twice, first at line 1");
}

#[test]
fn rejects_a_key_outside_a_profile() {
    let e = parse("# header\nMODEL=a\n[p]\n").unwrap_err();
    assert_eq!(e, ProfileError::KeyOutsideProfile { line: 2, key: "MODEL".into() });
}

#[test]
fn rejects_a_duplicate_key() {
    let e = parse("[p]\nMODEL=a\nFIT=on\nFIT=off\n").unwrap_err();
    assert_eq!(e.to_string(), "line 4: FIT is set twice in [p], first at line 3");
}

#[test]
fn rejects_a_profile_without_model() {
    let e = parse("[p]\nMODEL=a\n[q]\nNAME=Q\n[r]\nMODEL=\n").unwrap_err();
    assert_eq!(e, ProfileError::MissingModel { profile: "q".into(), line: 3 });
    // A commented-out profile needs nothing.
    assert!(parse("# [q]\n# NAME=Q\n").is_ok());
}

#[test]
fn rejects_an_unknown_profile() {
    let e = conf().find("qwen3-coder").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("no profile [qwen3-coder] in models.conf; the profiles are: glm-flash-q4, ")
    );
}

#[test]
fn rejects_an_inactive_profile() {
    let e = conf().find("qwen3-coder-ud-q6").unwrap_err();
    assert_eq!(e, ProfileError::InactiveProfile { id: "qwen3-coder-ud-q6".into(), line: 61 });
    assert!(matches!(
        rewrite_profile(EXAMPLE, "qwen3-coder-ud-q6", &ProfileChanges::default()),
        Err(ProfileError::InactiveProfile { .. })
    ));
}

#[test]
fn rejects_settings_llama_server_would_refuse_naming_the_line() {
    let p = |text: &str| parse(text).unwrap().profiles()[0].server_settings().unwrap_err();
    let e = p("[p]\nMODEL=m\nCTX_SIZE=big\nEXTRA_ARGS=--jinja\n");
    assert_eq!(
        e.to_string(),
        "line 3: profile [p]: invalid value \"big\" for argument \"--ctx-size\": expected an integer"
    );
    let e = p("[p]\nMODEL=m\nEXTRA_ARGS=--jinja --mmap\n");
    assert_eq!(e.to_string(), "line 3: profile [p]: invalid argument: --mmap");
    let e = p("[p]\nMODEL=m\nEXTRA_ARGS=-sm row\n");
    assert!(matches!(
        e,
        ProfileError::Settings { line: 1, error: crate::settings::SettingsError::SplitModeRow, .. }
    ));
    let e = p("[p]\nMODEL=m\nFLASH_ATTN=0\nEXTRA_ARGS=-fa off\n");
    assert!(e.to_string().contains("requires flash attention"), "the container's q8_0 V cache with -fa off");
}

#[test]
fn rejects_an_invalid_change() {
    let change = |c: ProfileChanges| rewrite_profile(EXAMPLE, "glm-flash-q4", &c).unwrap_err();
    let e =
        change(ProfileChanges { keys: vec![("BAD KEY".into(), "1".into())], ..ProfileChanges::default() });
    assert!(matches!(e, ProfileError::InvalidChange { .. }));
    let e =
        change(ProfileChanges { keys: vec![("NAME".into(), "a\nb".into())], ..ProfileChanges::default() });
    assert!(e.to_string().ends_with("spans lines"));
    let e = change(ProfileChanges {
        placement: Some(vec!["-ot".into(), "a=CPU b=CPU".into()]),
        ..Default::default()
    });
    assert!(e.to_string().contains("EXTRA_ARGS, which is split on spaces"));
    let e = change(ProfileChanges { fit_target: Some(vec![]), ..ProfileChanges::default() });
    assert!(matches!(e, ProfileError::InvalidChange { .. }));
}

#[test]
fn a_rewrite_that_changes_nothing_returns_the_same_text() {
    for p in conf().profiles() {
        assert_eq!(rewrite_profile(EXAMPLE, &p.id, &ProfileChanges::default()).unwrap(), EXAMPLE);
    }
    let same = ProfileChanges {
        ctx_size: Some(262_144),
        n_gpu_layers: Some(GpuLayers::Count(99)),
        fit: Some(false),
        ubatch_size: Some(512),
        placement: Some(vec![
            "-ot".into(),
            r"blk\.([0-9]|1[0-6])\.=CUDA0,blk\.(1[7-9]|2[0-4])\.=CUDA1,exps=CPU".into(),
        ]),
        keys: vec![("NAME".into(), "Qwen3-Coder-Next UD-Q5_K_XL".into())],
        ..ProfileChanges::default()
    };
    assert_eq!(rewrite_profile(EXAMPLE, "qwen3-coder-ud-q5", &same).unwrap(), EXAMPLE);
}

#[test]
fn a_new_placement_replaces_only_the_placement_flags() {
    let changes = ProfileChanges {
        placement: Some(vec![
            "-ot".into(),
            r"blk\.([0-9]|1[0-7])\.=CUDA0,blk\.(1[8-9]|2[0-4])\.=CUDA1,exps=CPU".into(),
        ]),
        ..ProfileChanges::default()
    };
    let out = rewrite_profile(EXAMPLE, "qwen3-coder-ud-q5", &changes).unwrap();
    let diff: Vec<(&str, &str)> = EXAMPLE.lines().zip(out.lines()).filter(|(a, b)| a != b).collect();
    assert_eq!(
        diff,
        [(
            r"EXTRA_ARGS=--jinja -np 1 -b 2048 -ub 512 --no-context-shift --temp 1.0 --top-p 0.95 --top-k 40 --min-p 0.01 -ot blk\.([0-9]|1[0-6])\.=CUDA0,blk\.(1[7-9]|2[0-4])\.=CUDA1,exps=CPU",
            r"EXTRA_ARGS=--jinja -np 1 -b 2048 -ub 512 --no-context-shift --temp 1.0 --top-p 0.95 --top-k 40 --min-p 0.01 -ot blk\.([0-9]|1[0-7])\.=CUDA0,blk\.(1[8-9]|2[0-4])\.=CUDA1,exps=CPU",
        )]
    );
    let s = parse(&out).unwrap().find("qwen3-coder-ud-q5").unwrap().server_settings().unwrap();
    assert_eq!(s.overrides[0].pattern, r"blk\.([0-9]|1[0-7])\.");
}

#[test]
fn missing_keys_go_after_the_last_key_line() {
    let changes = ProfileChanges {
        n_gpu_layers: Some(GpuLayers::Count(99)),
        fit: Some(false),
        placement: Some(vec!["-ot".into(), "exps=CPU".into()]),
        ..ProfileChanges::default()
    };
    let out = rewrite_profile(EXAMPLE, "bench-qwen3-coder-ud-q5", &changes).unwrap();
    let tail = "[bench-qwen3-coder-ud-q5]\n\
                NAME=Qwen3-Coder-Next UD-Q5_K_XL (benchmark)\n\
                MODEL=Qwen3-Coder-Next/UD-Q5_K_XL/Qwen3-Coder-Next-UD-Q5_K_XL-00001-of-00003.gguf\n\
                CTX_SIZE=10240\n\
                EXTRA_ARGS=--jinja -np 1 -b 512 -ub 512 --no-context-shift -ot exps=CPU\n\
                N_GPU_LAYERS=99\n\
                FIT=off\n";
    assert!(out.ends_with(tail), "{out}");
    let start = EXAMPLE.find("[bench-qwen3-coder-ud-q5]").unwrap();
    assert_eq!(out[..start], EXAMPLE[..start]);
}

#[test]
fn extra_args_keep_every_other_flag_in_order() {
    let text = "[p]\nMODEL=m\n  EXTRA_ARGS=--jinja -c 4096 -ngl 20 --temp -c -ub 256 -ot x=CPU --no-kv-offload \
                --n-gpu-layers 30 -ts 3,1 --fit_target 256 --unknown -ub 128\n# after\n";
    let changes = ProfileChanges {
        ctx_size: Some(8192),
        ubatch_size: Some(512),
        placement: Some(vec!["-ot".into(), "y=CUDA0".into(), "-ngl".into(), "99".into()]),
        ..ProfileChanges::default()
    };
    let out = rewrite_profile(text, "p", &changes).unwrap();
    assert_eq!(
        out,
        "[p]\nMODEL=m\n  EXTRA_ARGS=--jinja -ot y=CUDA0 -ngl 99 --temp -c -ub 512 --no-kv-offload --unknown\nCTX_SIZE=8192\n# after\n"
    );
    // -ub appended when there was none.
    let out = rewrite_profile(
        "[p]\nMODEL=m\n",
        "p",
        &ProfileChanges { ubatch_size: Some(2048), ..Default::default() },
    );
    assert_eq!(out.unwrap(), "[p]\nMODEL=m\nEXTRA_ARGS=-ub 2048\n");
}

#[test]
fn line_endings_are_kept() {
    let crlf = EXAMPLE.replace('\n', "\r\n");
    let changes = ProfileChanges {
        fit: Some(false),
        fit_target: Some(vec![Bytes::from_mib(256)]),
        ..Default::default()
    };
    let out = rewrite_profile(&crlf, "glm-flash-q4", &changes).unwrap();
    assert!(out.contains("EXTRA_ARGS=--jinja -np 1 --temp 1.0 --top-p 0.95 --min-p 0.01 --split-mode none --main-gpu 0\r\nFIT=off\r\nFIT_TARGET=256\r\n\r\n# Q8 needs both GPUs."));
    assert!(!out.replace("\r\n", "").contains('\n'));

    // A file that ends without a newline still does.
    let out = rewrite_profile("[p]\r\nMODEL=m", "p", &changes).unwrap();
    assert_eq!(out, "[p]\r\nMODEL=m\r\nFIT=off\r\nFIT_TARGET=256");
    let out = rewrite_profile("[p]\nMODEL=m\nFIT=on", "p", &changes).unwrap();
    assert_eq!(out, "[p]\nMODEL=m\nFIT=off\nFIT_TARGET=256");
}

fn changes_strategy() -> impl Strategy<Value = ProfileChanges> {
    let placement = prop::sample::select(vec![
        vec!["-ot", r"blk\.([0-9]|1[0-3])\.=CUDA0,exps=CPU"],
        vec!["--n-cpu-moe", "12", "-ngl", "99"],
        vec!["-ts", "3,1"],
        vec![],
    ]);
    (
        prop::option::of(prop::sample::select(vec![0u32, 10_240, 131_072, 262_144])),
        prop::option::of(prop::sample::select(vec![GpuLayers::Auto, GpuLayers::All, GpuLayers::Count(40)])),
        prop::option::of(any::<bool>()),
        prop::option::of(prop::collection::vec((0u64..4096).prop_map(Bytes::from_mib), 1..3)),
        prop::option::of(prop::sample::select(vec![256u32, 512, 2048])),
        prop::option::of(placement.prop_map(|p| p.into_iter().map(String::from).collect::<Vec<_>>())),
        prop::collection::vec(
            (prop::sample::select(vec!["NAME", "SPEED", "NEW_KEY"]), "[a-z ~0-9/.]{0,12}")
                .prop_map(|(k, v)| (k.to_string(), v)),
            0..3,
        ),
    )
        .prop_map(|(ctx_size, n_gpu_layers, fit, fit_target, ubatch_size, placement, keys)| {
            ProfileChanges { ctx_size, n_gpu_layers, fit, fit_target, ubatch_size, placement, keys }
        })
}

proptest! {
    /// Rewriting profile P never changes a byte outside P's lines, and P then says what was asked.
    #[test]
    fn a_rewrite_touches_only_its_profile(
        index in 0usize..6,
        changes in changes_strategy(),
        crlf in any::<bool>(),
    ) {
        let text = if crlf { EXAMPLE.replace('\n', "\r\n") } else { EXAMPLE.to_string() };
        let before = parse(&text).unwrap();
        let profile = &before.profiles()[index];
        let start = before.lines()[profile.line - 1].start;
        let end = before.lines()[profile.last_line - 1].end();
        let out = rewrite_profile(&text, &profile.id, &changes).unwrap();
        prop_assert_eq!(&out[..start], &text[..start]);
        prop_assert_eq!(&out[out.len() - (text.len() - end)..], &text[end..]);

        let after = parse(&out).unwrap();
        let p = after.find(&profile.id).unwrap();
        prop_assert_eq!(after.profiles().len(), before.profiles().len());
        let s = p.server_settings().unwrap();
        if let Some(n) = changes.ctx_size {
            prop_assert_eq!(s.ctx_size, if n == 0 { CtxSize::Train } else { CtxSize::Tokens(n) });
        }
        if let Some(ub) = changes.ubatch_size {
            prop_assert_eq!(s.ubatch_size, ub);
        }
        if let Some(fit) = changes.fit {
            prop_assert_eq!(s.fit, fit);
        }
        for (k, v) in &changes.keys {
            // The last value given for a key is the one written.
            let last = changes.keys.iter().rev().find(|(k2, _)| k2 == k).map(|(_, v)| v.trim());
            prop_assert_eq!(p.entry(k).map(|e| e.value.as_str()), last, "{}={}", k, v);
        }
        // Rewriting again with the same changes changes nothing more.
        prop_assert_eq!(rewrite_profile(&out, &profile.id, &changes).unwrap(), out);
    }
}
