//! Command lines: arguments shell-escaped for a POSIX shell, the full `llama-server` command of a
//! plan, and the `--fit on --fit-target` form of a plan when llama.cpp's own fitter lands on it.

use crate::units::Bytes;

/// `arg` as one word of a POSIX shell: as is when it holds only characters no shell treats
/// specially, else in single quotes (a `'` inside becomes `'\''`).
pub fn shell_word(arg: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !arg.is_empty() && arg.chars().all(safe) {
        return arg.to_owned();
    }
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// `program` and `args` as one shell command line.
pub fn shell_command(program: &str, args: &[String]) -> String {
    std::iter::once(shell_word(program))
        .chain(args.iter().map(|a| shell_word(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `llama-server` command for the arguments of a plan.
pub fn server_command(args: &[String]) -> String {
    shell_command("llama-server", args)
}

/// The placement flags that let llama.cpp's fitter choose the plan itself: `--fit on
/// --fit-target a,b` (whole MiB, as the flag takes them, common/arg.cpp:2899-2922).
pub fn fit_target_args(margins: &[Bytes]) -> Vec<String> {
    let mib: Vec<String> = margins.iter().map(|m| m.mib_floor().to_string()).collect();
    vec!["--fit".to_owned(), "on".to_owned(), "--fit-target".to_owned(), mib.join(",")]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_that_need_quotes_get_them() {
        assert_eq!(shell_word("-ngl"), "-ngl");
        assert_eq!(shell_word("23,26"), "23,26");
        assert_eq!(
            shell_word("/models/Qwen3-Coder-Next/UD-Q5_K_XL/a.gguf"),
            "/models/Qwen3-Coder-Next/UD-Q5_K_XL/a.gguf"
        );
        assert_eq!(
            shell_word(r"blk\.([0-9]|1[0-4])\.=CUDA0,exps=CPU"),
            r"'blk\.([0-9]|1[0-4])\.=CUDA0,exps=CPU'"
        );
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
        assert_eq!(shell_word("a b"), "'a b'");
    }

    #[test]
    fn a_command_line() {
        let args: Vec<String> =
            ["-c", "262144", "-ot", r"blk\.30\.ffn_down_exps=CPU,exps=CPU", "--fit", "off"]
                .map(String::from)
                .to_vec();
        insta::assert_snapshot!(server_command(&args), @r"llama-server -c 262144 -ot 'blk\.30\.ffn_down_exps=CPU,exps=CPU' --fit off");
        assert_eq!(
            fit_target_args(&[Bytes::from_mib(128), Bytes::from_mib(1024)]).join(" "),
            "--fit on --fit-target 128,1024"
        );
    }
}
