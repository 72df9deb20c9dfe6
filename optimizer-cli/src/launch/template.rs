//! The user's launch template, for setups where llama-server runs in a container: a command line
//! (split like a POSIX shell splits words, then run without a shell) with the arguments spliced in.
//!
//! Placeholders:
//! - `{args}` as a whole word: the llama-server arguments, one word each;
//! - `{args}` inside a word: the arguments joined and shell-quoted (for `sh -c '… {args}'`);
//! - `{args_plain}`: the arguments joined with spaces, unquoted (for `EXTRA_ARGS={args_plain}`,
//!   which the container splits on spaces again);
//! - `{port}`: the port the server must answer on at 127.0.0.1 (map it in the container).
//!
//! Example, the user's compose service with the flags in EXTRA_ARGS:
//! `docker compose run --rm -p {port}:{port} -e "EXTRA_ARGS={args_plain}" llama-server`.

use anyhow::{Result, bail};

/// The command line for `args` and `port`.
pub fn splice(template: &str, args: &[String], port: u16) -> Result<Vec<String>> {
    let Some(words) = shlex::split(template) else {
        bail!(
            "the launch template '{template}' has unbalanced quotes\n\
             hint: quote it like a shell command line"
        );
    };
    if words.is_empty() {
        bail!("the launch template is empty");
    }
    if !template.contains("{args}") && !template.contains("{args_plain}") {
        bail!(
            "the launch template '{template}' has no {{args}} or {{args_plain}}: splitplan could not pass the \
             placement to llama-server\nhint: put {{args}} where llama-server's arguments go"
        );
    }
    let quoted = shlex::try_join(args.iter().map(String::as_str))
        .map_err(|e| anyhow::anyhow!("could not quote the arguments for the launch template: {e}"))?;
    let plain = args.join(" ");
    let mut out = Vec::new();
    for word in words {
        if word == "{args}" {
            out.extend(args.iter().cloned());
        } else {
            out.push(
                word.replace("{args_plain}", &plain)
                    .replace("{args}", &quoted)
                    .replace("{port}", &port.to_string()),
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> Vec<String> {
        ["-ot", r"blk\.(1|2)\.=CUDA0,exps=CPU", "--port", "4000"].iter().map(ToString::to_string).collect()
    }

    #[test]
    fn whole_word_args_stay_separate() {
        let argv = splice("/opt/llama/llama-server {args}", &args(), 4000).unwrap();
        assert_eq!(
            argv,
            ["/opt/llama/llama-server", "-ot", r"blk\.(1|2)\.=CUDA0,exps=CPU", "--port", "4000"]
        );
    }

    #[test]
    fn embedded_args_are_shell_quoted_and_plain_args_are_not() {
        let argv = splice("sh -c 'exec server {args}'", &args(), 4000).unwrap();
        // shlex quotes with double quotes, doubling the backslashes: sh reads back the same word
        assert_eq!(argv, ["sh", "-c", r#"exec server -ot "blk\\.(1|2)\\.=CUDA0,exps=CPU" --port 4000"#]);
        let back = shlex::split(&argv[2]).unwrap();
        assert_eq!(back[3], r"blk\.(1|2)\.=CUDA0,exps=CPU");
        let argv = splice(
            r#"docker compose run --rm -p {port}:{port} -e "EXTRA_ARGS={args_plain}" llama"#,
            &args(),
            4000,
        )
        .unwrap();
        assert_eq!(
            argv,
            [
                "docker",
                "compose",
                "run",
                "--rm",
                "-p",
                "4000:4000",
                "-e",
                r"EXTRA_ARGS=-ot blk\.(1|2)\.=CUDA0,exps=CPU --port 4000",
                "llama"
            ]
        );
    }

    #[test]
    fn bad_templates() {
        assert!(splice("server 'open", &args(), 1).unwrap_err().to_string().contains("unbalanced quotes"));
        assert!(splice("server --flag", &args(), 1).unwrap_err().to_string().contains("has no {args}"));
        assert!(splice("", &args(), 1).is_err());
    }
}
