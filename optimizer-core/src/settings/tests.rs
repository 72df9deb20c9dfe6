use proptest::prelude::*;

use super::flags;
use super::*;

fn args(s: &str) -> Vec<&str> {
    s.split_whitespace().collect()
}

fn ok(s: &str) -> ServerSettings {
    match parse_args(&args(s)) {
        Ok(settings) => settings,
        Err(e) => panic!("{s:?}: {e}"),
    }
}

fn err(s: &str) -> SettingsError {
    match parse_args(&args(s)) {
        Ok(settings) => panic!("{s:?} parsed: {settings:?}"),
        Err(e) => e,
    }
}

fn env_parse(a: &str, env: &[(&str, &str)]) -> Result<Parsed, SettingsError> {
    parse(&args(a), env)
}

#[test]
fn no_flags_give_llama_server_defaults() {
    let s = ok("");
    assert_eq!(s, ServerSettings::default());
    assert_eq!(s.ctx_size, CtxSize::Unset);
    assert_eq!((s.batch_size, s.ubatch_size), (2048, 512));
    assert_eq!(s.parallel, Parallel::Auto);
    assert_eq!((s.effective_parallel(), s.effective_kv_unified()), (4, true));
    assert_eq!(s.flash_attn, FlashAttn::Auto);
    assert_eq!((s.cache_type_k, s.cache_type_v), (GgmlType::F16, GgmlType::F16));
    assert_eq!(s.n_gpu_layers, GpuLayers::Auto);
    assert!(s.fit);
    assert_eq!(s.fit_target.for_device(0), Bytes::from_mib(1024));
    assert_eq!(s.fit_ctx, 4096);
    assert!(s.to_args().is_empty());
}

/// Every spelling of every memory flag, from the generated table, gives the same settings as the
/// first spelling, and those differ from the defaults.
#[test]
fn every_spelling_of_each_memory_flag() {
    let samples: &[(&str, Option<&str>)] = &[
        ("-c", Some("8192")),
        ("--kv-unified-per-slot", Some("4096")),
        ("-b", Some("512")),
        ("-ub", Some("2048")),
        ("--swa-full", None),
        ("-ctxcp", Some("0")),
        ("-cram", Some("0")),
        ("-kvu", None),
        ("-fa", Some("on")),
        ("-kvo", None),
        ("--repack", None),
        ("--no-host", None),
        ("-ctk", Some("q8_0")),
        ("-ctv", Some("q4_0")),
        ("-np", Some("1")),
        ("-mm", Some("mmproj.gguf")),
        ("-mmdev", Some("CUDA1")),
        ("-lm", Some("none")),
        ("-dev", Some("CUDA1")),
        ("-ot", Some("exps=CPU")),
        ("-cmoe", None),
        ("-ncmoe", Some("3")),
        ("-ncffn", Some("2")),
        ("-ngl", Some("99")),
        ("-sm", Some("none")),
        ("-ts", Some("3,1")),
        ("-mg", Some("1")),
        ("-fit", Some("off")),
        ("-fitt", Some("128,1024")),
        ("-fitc", Some("8192")),
        ("--override-kv", Some("a.b=int:3")),
        ("--op-offload", None),
        ("--lora", Some("a.gguf")),
        ("--lora-scaled", Some("a.gguf:0.5")),
        ("-m", Some("/models/x.gguf")),
        ("--embedding", None),
        ("--rerank", None),
        ("--spec-type", Some("draft-mtp")),
        ("--spec-draft-n-max", Some("8")),
        ("--spec-draft-model", Some("draft.gguf")),
        ("--spec-draft-ngl", Some("10")),
        ("--spec-draft-type-k", Some("q8_0")),
        ("--spec-draft-type-v", Some("q8_0")),
        ("--spec-draft-override-tensor", Some("exps=CPU")),
        ("--spec-draft-cpu-moe", None),
        ("--spec-draft-n-cpu-moe", Some("2")),
        ("--spec-draft-device", Some("CUDA1")),
        ("--spec-default", None),
    ];
    for (id, value) in samples {
        let (def, _) = flags::lookup(id).unwrap();
        let spellings: Vec<(&str, bool)> =
            def.args.iter().map(|s| (*s, true)).chain(def.neg.iter().map(|s| (*s, false))).collect();
        let with = |spelling: &str| {
            let mut a = vec![spelling];
            a.extend(value);
            parse_args(&a).unwrap_or_else(|e| panic!("{spelling}: {e}"))
        };
        let positive = with(def.args[0]);
        let negative = def.neg.first().map(|n| with(n));
        // A flag whose default is on shows itself through its negative spelling.
        assert!(
            positive != ServerSettings::default() || negative.as_ref().is_some_and(|n| *n != positive),
            "{id} changed nothing"
        );
        for (spelling, is_positive) in spellings {
            let expected = if is_positive { &positive } else { negative.as_ref().unwrap() };
            assert_eq!(&with(spelling), expected, "{spelling}");
            // Long names accept `_` for `-` (arg.cpp:822-825).
            if spelling.starts_with("--") && spelling[2..].contains('-') {
                assert_eq!(
                    &with(&spelling.replace('-', "_").replacen("__", "--", 1)),
                    expected,
                    "{spelling}"
                );
            }
        }
    }
}

#[test]
fn values_of_the_memory_flags() {
    assert_eq!(ok("-c 262144").ctx_size, CtxSize::Tokens(262_144));
    let c0 = ok("-c 0");
    assert_eq!((c0.ctx_size, c0.fit_ctx), (CtxSize::Train, FIT_CTX_NEVER_SHRINK));
    // A later --fit-ctx lets fit shrink -c 0 again; an earlier one does not.
    assert_eq!(ok("-c 0 --fit-ctx 8192").fit_ctx, 8192);
    assert_eq!(ok("--fit-ctx 8192 -c 0").fit_ctx, FIT_CTX_NEVER_SHRINK);
    assert_eq!(ok("-np -1").parallel, Parallel::Auto);
    assert_eq!(ok("-np -7").parallel, Parallel::Auto);
    let np1 = ok("-np 1 --no-kv-unified");
    assert_eq!((np1.effective_parallel(), np1.effective_kv_unified()), (1, false));
    assert!(ok("--no-kv-unified").effective_kv_unified(), "auto slots force a unified cache");
    for (v, fa) in [
        ("on", FlashAttn::On),
        ("enabled", FlashAttn::On),
        ("true", FlashAttn::On),
        ("1", FlashAttn::On),
        ("off", FlashAttn::Off),
        ("disabled", FlashAttn::Off),
        ("false", FlashAttn::Off),
        ("0", FlashAttn::Off),
        ("auto", FlashAttn::Auto),
        ("-1", FlashAttn::Auto),
    ] {
        assert_eq!(ok(&format!("-fa {v}")).flash_attn, fa, "{v}");
    }
    for t in KV_CACHE_TYPES {
        let s = ok(&format!("-ctk {0} -ctv {0} -fa on", kv_type_name(t)));
        assert_eq!((s.cache_type_k, s.cache_type_v), (t, t));
    }
    assert_eq!(ok("-ngl 99").n_gpu_layers, GpuLayers::Count(99));
    assert_eq!(ok("-ngl 0").n_gpu_layers, GpuLayers::Count(0));
    assert_eq!(ok("-ngl auto").n_gpu_layers, GpuLayers::Auto);
    assert_eq!(ok("-ngl -1").n_gpu_layers, GpuLayers::Auto);
    assert_eq!(ok("-ngl all").n_gpu_layers, GpuLayers::All);
    assert_eq!(ok("-ngl -2").n_gpu_layers, GpuLayers::All);
    assert_eq!(ok("-ngl 99abc").n_gpu_layers, GpuLayers::Count(99), "stoi reads a prefix");
    assert_eq!(ok("-ts 3,1").tensor_split, [3.0, 1.0]);
    assert_eq!(ok("-ts 3/1").tensor_split, [3.0, 1.0]);
    assert_eq!(ok("-ts 0.6,0.4,0").tensor_split, [0.6, 0.4]);
    assert!(ok("-ts 0,0").tensor_split.is_empty());
    assert_eq!(ok("-sm none").split_mode, SplitMode::None);
    assert_eq!(ok("-sm layer").split_mode, SplitMode::Layer);
    for (v, m) in [
        ("auto", LoadMode::Auto),
        ("none", LoadMode::None),
        ("mmap", LoadMode::Mmap),
        ("mlock", LoadMode::Mlock),
        ("mmap+mlock", LoadMode::MmapMlock),
        ("dio", LoadMode::DirectIo),
    ] {
        assert_eq!(ok(&format!("-lm {v}")).load_mode, m);
    }
    assert_eq!(ok("-dev none").devices, DeviceSelection::None);
    assert_eq!(ok("-dev CUDA0,CUDA1").devices, DeviceSelection::List(vec!["CUDA0".into(), "CUDA1".into()]));
    assert_eq!(ok("-cram -1").prompt_cache, PromptCache::Unlimited);
    assert_eq!(ok("-cram 0").prompt_cache, PromptCache::Disabled);
    assert_eq!(ok("-cram 4096").prompt_cache, PromptCache::Limit(Bytes::from_mib(4096)));
    assert!(!ok("-mmdev none").mmproj.offload);
    let per_slot = ok("-np 2 --kv-unified-per-slot 32768");
    assert_eq!(per_slot.effective_ctx_size(), CtxSize::Tokens(65_536));
    assert_eq!(ok("-c 8192 --kv-unified-per-slot 32768").effective_ctx_size(), CtxSize::Tokens(8192));
    assert_eq!(ok("-c 0 --kv-unified-per-slot 32768").effective_ctx_size(), CtxSize::Train);
    assert!(ok("--spec-type draft-mtp").loads_mtp_layers());
    assert_eq!(ok("--spec-type none,draft-mtp").speculative.types, [SpecType::None]);
}

#[test]
fn later_flags_override_earlier_ones() {
    let s = ok("-c 4096 -ub 2048 -c 8192 -ub 512 -fa off -fa on --fit off --fit on");
    assert_eq!(
        (s.ctx_size, s.ubatch_size, s.flash_attn, s.fit),
        (CtxSize::Tokens(8192), 512, FlashAttn::On, true)
    );
}

#[test]
fn fit_target_one_value_or_per_device() {
    assert_eq!(ok("--fit-target 128").fit_target, FitTarget::uniform(Bytes::from_mib(128)));
    let t = ok("--fit-target 128,1024").fit_target;
    assert_eq!(
        (t.for_device(0), t.for_device(1), t.for_device(5)),
        (Bytes::from_mib(128), Bytes::from_mib(1024), Bytes::from_mib(1024))
    );
    // A list leaves later devices at what an earlier single value set (arg.cpp:2911-2918).
    let t = ok("-fitt 500 -fitt 128,256").fit_target;
    assert_eq!(
        (t.for_device(0), t.for_device(1), t.for_device(2)),
        (Bytes::from_mib(128), Bytes::from_mib(256), Bytes::from_mib(500))
    );
    assert_eq!(ok("-fitt 128,1024").to_args(), ["--fit-target", "128,1024"]);
    assert_eq!(ok("-fitt 128/1024,1024").fit_target, FitTarget::per_device(vec![Bytes::from_mib(128)]));
}

/// The patterns and their order exactly as common.h builds them (common.h:1224-1243).
#[test]
fn n_cpu_moe_expands_like_common_h() {
    let s = ok("--n-cpu-moe 3");
    let items: Vec<String> = s.overrides.iter().map(ToString::to_string).collect();
    assert_eq!(
        items,
        [
            r"blk\.0\.ffn_(up|down|gate|gate_up)_(ch|)exps=CPU",
            r"blk\.1\.ffn_(up|down|gate|gate_up)_(ch|)exps=CPU",
            r"blk\.2\.ffn_(up|down|gate|gate_up)_(ch|)exps=CPU",
        ]
    );
    assert_eq!(ok("--cpu-moe").overrides[0].to_string(), r"\.ffn_(up|down|gate|gate_up)_(ch|)exps=CPU");
    let ffn: Vec<String> = ok("--n-cpu-ffn 2").overrides.iter().map(ToString::to_string).collect();
    assert_eq!(ffn, [r"blk\.0\.ffn_(up|down|gate)\.=CPU", r"blk\.1\.ffn_(up|down|gate)\.=CPU"]);
    assert!(ok("--n-cpu-moe 0").overrides.is_empty());
}

#[test]
fn overrides_keep_command_line_order() {
    let s = ok(
        r"-ot blk\.([0-9]|1[0-6])\.=CUDA0,blk\.(1[7-9]|2[0-4])\.=CUDA1 --n-cpu-moe 2 -ot a=b=c --cpu-moe -ot exps=CPU",
    );
    let items: Vec<String> = s.overrides.iter().map(ToString::to_string).collect();
    assert_eq!(
        items,
        [
            r"blk\.([0-9]|1[0-6])\.=CUDA0",
            r"blk\.(1[7-9]|2[0-4])\.=CUDA1",
            r"blk\.0\.ffn_(up|down|gate|gate_up)_(ch|)exps=CPU",
            r"blk\.1\.ffn_(up|down|gate|gate_up)_(ch|)exps=CPU",
            "a=b=c",
            r"\.ffn_(up|down|gate|gate_up)_(ch|)exps=CPU",
            "exps=CPU",
        ]
    );
    // Each item splits on its first `=`; the target's name is checked against the devices later.
    assert_eq!(s.overrides[4].pattern, "a");
    assert_eq!(s.overrides[4].target, OverrideTarget::Device("b=c".into()));
    assert_eq!(s.overrides[0].target, OverrideTarget::Device("CUDA0".into()));
    assert_eq!(s.overrides[6].target, OverrideTarget::Cpu);
    assert_eq!(
        s.to_args()[..6],
        [
            "-ot",
            r"blk\.([0-9]|1[0-6])\.=CUDA0,blk\.(1[7-9]|2[0-4])\.=CUDA1",
            "--n-cpu-moe",
            "2",
            "-ot",
            "a=b=c",
        ]
    );
}

#[test]
fn flags_that_change_no_memory_are_consumed_with_their_values() {
    let s = ok("--jinja --host 0.0.0.0 --port 8080 --temp 1.0 --top-k 40 --top-p 0.95 --min-p 0.01 \
                --no-context-shift --reasoning-format none -lv 4 --log-timestamps --metrics --no-webui \
                -a name --api-key k --chat-template-kwargs {} -t 8 --no-warmup -c 8192");
    assert_eq!(s, ServerSettings { ctx_size: CtxSize::Tokens(8192), ..ServerSettings::default() });
    // `--temp` takes a value, so a flag-like value is the value, not a flag.
    assert_eq!(ok("--temp -c").ctx_size, CtxSize::Unset);
}

#[test]
fn environment_then_command_line() {
    let p =
        env_parse("", &[("LLAMA_ARG_CTX_SIZE", "4096"), ("LLAMA_ARG_N_GPU_LAYERS", "all"), ("HOME", "/x")])
            .unwrap();
    assert_eq!((p.settings.ctx_size, p.settings.n_gpu_layers), (CtxSize::Tokens(4096), GpuLayers::All));
    assert!(p.notes.is_empty());

    let p = env_parse("-c 8192", &[("LLAMA_ARG_CTX_SIZE", "4096")]).unwrap();
    assert_eq!(p.settings.ctx_size, CtxSize::Tokens(8192));
    assert_eq!(p.notes, [Note::EnvOverridden { var: "LLAMA_ARG_CTX_SIZE".into(), flag: "-c".into() }]);

    // -ot adds to what the environment gave, environment first.
    let p = env_parse("-ot b=CUDA0", &[("LLAMA_ARG_OVERRIDE_TENSOR", "a=CPU")]).unwrap();
    let items: Vec<String> = p.settings.overrides.iter().map(ToString::to_string).collect();
    assert_eq!(items, ["a=CPU", "b=CUDA0"]);

    // Negative variables, truthy flags and booleans (arg.cpp:125-143, 789-803).
    let p = env_parse(
        "",
        &[("LLAMA_ARG_NO_KV_OFFLOAD", ""), ("LLAMA_ARG_CPU_MOE", "1"), ("LLAMA_ARG_SWA_FULL", "0")],
    );
    let s = p.unwrap().settings;
    assert!(!s.kv_offload);
    assert_eq!(s.overrides, [TensorOverride::cpu_moe()]);
    assert!(!s.swa_full, "a falsy value does not apply a flag");
    assert!(!env_parse("", &[("LLAMA_ARG_KV_OFFLOAD", "off")]).unwrap().settings.kv_offload);
    assert_eq!(
        env_parse("", &[("LLAMA_ARG_FIT_TARGET", "128,1024")]).unwrap().settings,
        ok("-fitt 128,1024")
    );
}

#[test]
fn notes_for_repeats_and_what_is_not_modelled() {
    let p = env_parse(
        "-ot a=CPU -ot b=CPU --mmproj p.gguf -dt 0.1 --spec-type ngram-mod --spec-type draft-mtp",
        &[("X", "y")],
    )
    .unwrap();
    assert_eq!(
        p.notes,
        [
            Note::Repeated { flag: "-ot".into() },
            Note::NotModelled { flag: "--mmproj".into() },
            Note::Deprecated { flag: "-dt".into() },
        ]
    );
    assert_eq!(p.notes[0].to_string(), "argument -ot is given more than once");
}

// One test per rejection path.

#[test]
fn rejects_an_unknown_flag_like_llama_server() {
    let e = err("-c 4096 --mmap");
    assert_eq!(e.to_string(), "invalid argument: --mmap");
    assert_eq!(e.arg_index(), Some(2));
    assert_eq!(err("--no-mmap").to_string(), "invalid argument: --no-mmap");
    assert_eq!(err("--ctx-size=4096").to_string(), "invalid argument: --ctx-size=4096");
    assert_eq!(err("-p hello").to_string(), "invalid argument: -p", "excluded from llama-server");
}

#[test]
fn rejects_a_positional_argument() {
    assert_eq!(err("model.gguf").to_string(), "invalid argument: model.gguf");
}

#[test]
fn rejects_underscores_in_short_flags() {
    // Only `--` names have `_` turned into `-`.
    assert_eq!(err("-n_gpu_layers 1").to_string(), "invalid argument: -n_gpu_layers");
    assert_eq!(ok("--n_gpu_layers 1").n_gpu_layers, GpuLayers::Count(1));
}

#[test]
fn rejects_a_missing_value() {
    let e = err("-ngl 99 -c");
    assert_eq!(e.to_string(), "expected value for argument \"-c\"");
    assert_eq!(e.arg_index(), Some(2));
}

#[test]
fn rejects_a_non_integer() {
    assert_eq!(err("-c big").to_string(), "invalid value \"big\" for argument \"-c\": expected an integer");
    assert!(
        matches!(err("--port 99999999999"), SettingsError::InvalidValue { .. }),
        "ignored flags are read too"
    );
}

#[test]
fn rejects_a_negative_context() {
    assert_eq!(
        err("-c -5").to_string(),
        "invalid value \"-5\" for argument \"-c\": expected a context size of 0 (the model's training context) or more"
    );
}

#[test]
fn rejects_a_negative_batch() {
    assert!(matches!(err("-ub -1"), SettingsError::InvalidValue { .. }));
}

#[test]
fn rejects_zero_slots() {
    assert_eq!(
        err("-np 0").to_string(),
        "invalid value \"0\" for argument \"-np\": expected a number of slots of 1 or more, or -1 for auto"
    );
}

#[test]
fn rejects_an_unknown_flash_attn_value() {
    assert_eq!(
        err("-fa yes").to_string(),
        "invalid value \"yes\" for argument \"-fa\": expected on, off or auto"
    );
}

#[test]
fn rejects_an_unknown_kv_type() {
    assert_eq!(
        err("-ctk q6_k").to_string(),
        "invalid value \"q6_k\" for argument \"-ctk\": expected one of f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1"
    );
    // llama.cpp compares with ggml's lower-case names.
    assert!(matches!(err("-ctv Q8_0"), SettingsError::InvalidValue { .. }));
}

#[test]
fn rejects_a_bad_gpu_layer_count() {
    assert!(err("-ngl most").to_string().ends_with("expected a number of layers, auto or all"));
}

#[test]
fn rejects_an_unknown_split_mode() {
    assert!(err("-sm graph").to_string().ends_with("expected none, layer, row or tensor"));
}

#[test]
fn rejects_an_unknown_load_mode() {
    assert!(
        err("-lm mmap,mlock").to_string().ends_with("expected auto, none, mmap, mlock, mmap+mlock or dio")
    );
}

#[test]
fn rejects_an_unknown_fit_value() {
    assert!(err("--fit auto").to_string().ends_with("expected on or off"));
}

#[test]
fn rejects_a_bad_tensor_split() {
    assert!(matches!(err("-ts 3,x"), SettingsError::InvalidValue { .. }));
    assert!(matches!(err("-ts ,3"), SettingsError::InvalidValue { .. }), "an empty first field");
    assert!(matches!(err("-ts 3,-1"), SettingsError::InvalidValue { .. }));
}

#[test]
fn rejects_too_many_devices() {
    let sixteen = vec!["1"; MAX_DEVICES].join(",");
    assert!(err(&format!("-ts {sixteen}")).to_string().ends_with("expected at most 15 proportions"));
    assert!(err(&format!("-fitt {sixteen}")).to_string().ends_with("expected at most 15 margins"));
}

#[test]
fn rejects_a_bad_fit_target() {
    assert!(matches!(err("--fit-target -1"), SettingsError::InvalidValue { .. }));
    assert!(matches!(err("--fit-target 128,,x"), SettingsError::InvalidValue { .. }));
}

#[test]
fn rejects_an_override_without_a_target() {
    assert_eq!(
        err("-ot exps").to_string(),
        r#"invalid value "exps" for argument "-ot": expected PATTERN=BUFFER items such as exps=CPU or blk\.1\.=CUDA0"#
    );
    assert!(matches!(err("-ot exps="), SettingsError::InvalidValue { .. }));
    assert!(
        matches!(err("-ot a=CPU,"), SettingsError::InvalidValue { .. }),
        "a trailing comma is an empty item"
    );
}

#[test]
fn rejects_a_cpu_device() {
    assert!(matches!(err("-dev CUDA0,CPU"), SettingsError::InvalidValue { .. }));
    assert!(matches!(err("-dev CUDA0,"), SettingsError::InvalidValue { .. }));
}

#[test]
fn rejects_two_mmproj_devices() {
    assert!(
        err("-mmdev CUDA0,CUDA1").to_string().ends_with("expected one device for the multimodal projector")
    );
}

#[test]
fn rejects_a_negative_layer_count_for_n_cpu_moe() {
    assert!(matches!(err("--n-cpu-moe -1"), SettingsError::InvalidValue { .. }));
    assert!(matches!(err("--n-cpu-ffn -1"), SettingsError::InvalidValue { .. }));
}

#[test]
fn rejects_a_bad_lora_scale() {
    assert!(err("--lora-scaled a.gguf").to_string().ends_with("expected FNAME:SCALE"));
}

#[test]
fn rejects_a_bad_kv_override() {
    assert!(matches!(err("--override-kv a.b=3"), SettingsError::InvalidValue { .. }));
}

#[test]
fn rejects_an_unknown_speculative_type() {
    assert!(matches!(err("--spec-type eagle"), SettingsError::InvalidValue { .. }));
}

#[test]
fn rejects_a_removed_flag() {
    assert_eq!(
        err("--draft-max 8").to_string(),
        "argument \"--draft-max\" has been removed from llama.cpp: use --spec-draft-n-max or --spec-ngram-mod-n-max"
    );
}

#[test]
fn rejects_flags_that_exit_without_loading() {
    for f in ["-h", "--help", "--version", "--list-devices", "--cache-list", "--completion-bash"] {
        assert!(matches!(err(f), SettingsError::ExitsWithoutLoading { .. }), "{f}");
    }
}

#[test]
fn rejects_a_built_in_preset() {
    assert!(matches!(err("--gpt-oss-120b-default"), SettingsError::Preset { .. }));
    assert!(matches!(err("--fim-qwen-7b-spec"), SettingsError::Preset { .. }));
}

#[test]
fn rejects_split_mode_row() {
    let e = err("-sm row");
    assert_eq!(e, SettingsError::SplitModeRow);
    assert!(e.to_string().starts_with("llama.cpp cannot run this: -sm row is broken on CUDA in build 11434"));
    assert!(e.to_string().contains("§0.6"));
}

#[test]
fn rejects_split_mode_tensor() {
    assert!(err("-sm tensor").to_string().starts_with("-sm tensor is not planned: it is experimental"));
}

#[test]
fn rejects_a_quantized_v_cache_without_flash_attention() {
    let e = err("-ctv q8_0 -fa off");
    assert_eq!(e, SettingsError::QuantizedVWithoutFlashAttention { cache_type_v: GgmlType::Q8_0 });
    assert!(e.to_string().contains("(-ctv q8_0) requires flash attention"));
    // auto becomes on for a quantized V cache (llama-context.cpp:3843-3847); K alone needs nothing.
    let auto = ok("-ctv q8_0");
    assert_eq!((auto.flash_attn, auto.effective_flash_attn()), (FlashAttn::Auto, FlashAttn::On));
    assert_eq!(ok("-ctk q8_0 -fa off").effective_flash_attn(), FlashAttn::Off);
    assert_eq!(ok("-ctv bf16 -fa off").cache_type_v, GgmlType::Bf16);
}

#[test]
fn rejects_a_bad_environment_value() {
    let e = env_parse("", &[("LLAMA_ARG_KV_UNIFIED", "maybe")]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid value \"maybe\" for environment variable \"LLAMA_ARG_KV_UNIFIED\": expected a boolean: on, off, enabled, disabled, true, false, 1 or 0"
    );
    assert_eq!(e.arg_index(), None);
    let e = env_parse("", &[("LLAMA_ARG_CTX_SIZE", "lots")]).unwrap_err();
    assert!(e.to_string().contains("environment variable \"LLAMA_ARG_CTX_SIZE\""));
}

#[test]
fn renders_canonical_short_flags() {
    let s =
        ok("--ctx-size 262144 --n-gpu-layers 99 --flash-attn on --cache-type-k q8_0 --cache-type-v q8_0 \
                --fit off -np 1 -b 2048 -ub 512 --override-tensor exps=CPU");
    assert_eq!(
        s.to_args().join(" "),
        "-c 262144 -np 1 -fa on -ctk q8_0 -ctv q8_0 -ngl 99 -ot exps=CPU --fit off"
    );
    assert_eq!(ok("-c 0").to_args(), ["-c", "0"]);
    assert_eq!(ok("-c 0 -fitc 4096").to_args(), ["-c", "0", "--fit-ctx", "4096"]);
    assert_eq!(ok("-fitc -1").to_args(), ["--fit-ctx", "-1"]);
    assert_eq!(ok("--spec-type none,x").to_args(), ["--spec-type", "none"]);
}

/// Flags from which round-trip test commands are drawn: each is a list of words.
fn flag_strategy() -> impl Strategy<Value = Vec<String>> {
    let words = |v: &[&str]| v.iter().map(|s| (*s).to_string()).collect::<Vec<String>>();
    let kv = prop::sample::select(KV_CACHE_TYPES.to_vec()).prop_map(kv_type_name);
    let pattern = prop::sample::select(vec![
        r"blk\.([0-9]|1[0-6])\.",
        "exps",
        r"blk\.0\.ffn_(up|down|gate|gate_up)_(ch|)exps",
        r"\.ffn_(up|down|gate|gate_up)_(ch|)exps",
        "",
        "attn",
    ]);
    let target = prop::sample::select(vec!["CPU", "CUDA0", "CUDA1"]);
    let item = (pattern, target).prop_map(|(p, t)| format!("{p}={t}"));
    prop_oneof![
        (0u32..300_000).prop_map(move |n| words(&["-c", &n.to_string()])),
        (0u32..5000).prop_map(move |n| words(&["-b", &n.to_string()])),
        (0u32..5000).prop_map(move |n| words(&["--ubatch-size", &n.to_string()])),
        (-3i32..8)
            .prop_filter("np 0 is refused", |n| *n != 0)
            .prop_map(move |n| words(&["-np", &n.to_string()])),
        prop::sample::select(vec!["-kvu", "--no-kv-unified", "--swa-full", "-nkvo", "-kvo", "--no-host"])
            .prop_map(move |f| words(&[f])),
        prop::sample::select(vec![
            "--repack",
            "-nr",
            "--op-offload",
            "--no-op-offload",
            "--embedding",
            "-cmoe"
        ])
        .prop_map(move |f| words(&[f])),
        prop::sample::select(vec!["on", "auto", "1"]).prop_map(move |v| words(&["-fa", v])),
        kv.clone().prop_map(move |t| words(&["-ctk", &t])),
        kv.prop_map(move |t| words(&["-ctv", &t])),
        (-3i32..100).prop_map(move |n| words(&["-ngl", &n.to_string()])),
        prop::sample::select(vec!["auto", "all"]).prop_map(move |v| words(&["-ngl", v])),
        prop::collection::vec(0u32..40, 0..4).prop_map(move |v| {
            let parts: Vec<String> = v.iter().map(|x| (f64::from(*x) / 8.0).to_string()).collect();
            words(&["-ts", &if parts.is_empty() { "0".to_string() } else { parts.join(",") }])
        }),
        prop::sample::select(vec!["none", "layer"]).prop_map(move |v| words(&["-sm", v])),
        (-1i32..3).prop_map(move |n| words(&["-mg", &n.to_string()])),
        prop::collection::vec(item, 1..4).prop_map(move |items| words(&["-ot", &items.join(",")])),
        (0u32..5).prop_map(move |n| words(&["--n-cpu-moe", &n.to_string()])),
        (0u32..3).prop_map(move |n| words(&["--n-cpu-ffn", &n.to_string()])),
        prop::sample::select(vec!["on", "off"]).prop_map(move |v| words(&["--fit", v])),
        prop::collection::vec(0u64..3000, 1..4).prop_map(move |v| {
            let parts: Vec<String> = v.iter().map(ToString::to_string).collect();
            words(&["--fit-target", &parts.join(",")])
        }),
        (-1i32..20000).prop_map(move |n| words(&["--fit-ctx", &n.to_string()])),
        prop::sample::select(vec!["none", "CUDA1", "CUDA0,CUDA1"]).prop_map(move |v| words(&["-dev", v])),
        prop::sample::select(vec!["auto", "none", "mmap", "mlock", "mmap+mlock", "dio"])
            .prop_map(move |v| words(&["-lm", v])),
        (-2i32..9000).prop_map(move |n| words(&["-cram", &n.to_string()])),
        (-1i32..40).prop_map(move |n| words(&["-ctxcp", &n.to_string()])),
        prop::sample::select(vec!["ngram-mod", "draft-mtp,ngram-cache", "none"])
            .prop_map(move |v| words(&["--spec-type", v])),
        prop::sample::select(vec![
            "-mm a.gguf",
            "-mmdev none",
            "-mmdev CUDA1",
            "--no-mmproj-offload",
            "-md d.gguf"
        ])
        .prop_map(move |v| words(&v.split(' ').collect::<Vec<_>>())),
        prop::sample::select(vec![
            "-otd exps=CPU",
            "-ncmoed 2",
            "-cmoed",
            "-ngld 5",
            "-ctkd q8_0",
            "-devd CUDA1"
        ])
        .prop_map(move |v| words(&v.split(' ').collect::<Vec<_>>())),
        prop::sample::select(vec![
            "--lora a.gguf,b.gguf",
            "--lora-scaled c.gguf:0.5",
            "--override-kv a=int:1"
        ])
        .prop_map(move |v| words(&v.split(' ').collect::<Vec<_>>())),
        prop::sample::select(vec![
            "--jinja",
            "--temp 0.7",
            "--no-context-shift",
            "-lv 4",
            "--kv-unified-per-slot 4096"
        ])
        .prop_map(move |v| words(&v.split(' ').collect::<Vec<_>>())),
    ]
}

proptest! {
    /// settings → argv → parse → the same settings, for settings that parsing produces.
    #[test]
    fn render_then_parse_gives_the_same_settings(flags in prop::collection::vec(flag_strategy(), 0..12)) {
        let argv: Vec<String> = flags.concat();
        if let Ok(settings) = parse_args(&argv) {
            let rendered = settings.to_args();
            let again = parse_args(&rendered);
            prop_assert_eq!(again.as_ref(), Ok(&settings), "argv {:?} rendered {:?}", argv, rendered);
            // Canonical: rendering is a fixed point.
            prop_assert_eq!(again.map(|s| s.to_args()).ok(), Some(rendered));
        }
    }
}
