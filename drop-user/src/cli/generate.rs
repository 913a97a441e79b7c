//! What a package ships that is made from the code itself, so it cannot
//! drift from it: man pages and shell completions from the clap
//! definitions, and the default config file from the config types.

use std::{io::Write, path::PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;

use super::Cli;

#[derive(Clone, Copy, clap::ValueEnum)]
pub(super) enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(clap::Subcommand)]
pub(super) enum What {
    /// dropscope.1 and one page per subcommand (dropscope-watch.1, ...) in DIR.
    Man { dir: PathBuf },
    /// The three completion scripts in DIR, named as each shell looks for them
    /// (dropscope, _dropscope, dropscope.fish).
    Completions { dir: PathBuf },
    /// The default /etc/dropscope/dropscope.toml on stdout: every key
    /// commented, at its default.
    Config,
}

pub(super) fn run(what: What) -> Result<()> {
    match what {
        What::Man { dir } => man_pages(&dir),
        What::Completions { dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for (shell, name) in [
                (Shell::Bash, "dropscope"),
                (Shell::Zsh, "_dropscope"),
                (Shell::Fish, "dropscope.fish"),
            ] {
                let path = dir.join(name);
                let mut f = std::fs::File::create(&path)
                    .with_context(|| format!("writing {}", path.display()))?;
                completions(shell, &mut f)?;
            }
            Ok(())
        }
        What::Config => {
            std::io::stdout().write_all(crate::config::template().as_bytes())?;
            Ok(())
        }
    }
}

pub(super) fn completions(shell: Shell, out: &mut dyn Write) -> Result<()> {
    use clap_complete::Shell as S;
    let mut cmd = Cli::command();
    let shell = match shell {
        Shell::Bash => S::Bash,
        Shell::Zsh => S::Zsh,
        Shell::Fish => S::Fish,
    };
    clap_complete::generate(shell, &mut cmd, "dropscope", out);
    Ok(())
}

/// `dropscope.1` for the whole command and `dropscope-<sub>.1` for each
/// visible subcommand, as git and cargo name theirs.
fn man_pages(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // `help` is clap's own subcommand: no page of its own to point to.
    let mut cmd = Cli::command()
        .version(super::VERSION)
        .disable_help_subcommand(true);
    // Built, so the global flags (--log-level) reach each subcommand's page.
    cmd.build();
    let write = |name: &str, cmd: clap::Command| -> Result<()> {
        let path = dir.join(format!("{name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd)
            .manual("dropscope manual")
            .source(format!("dropscope {}", env!("CARGO_PKG_VERSION")))
            .render(&mut buf)?;
        std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))
    };
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("dropscope-{}", sub.get_name());
        // The page's NAME and SYNOPSIS read "dropscope-watch", as man
        // looks it up; the synopsis still shows how it is typed.
        let sub = sub
            .clone()
            .name(name.clone())
            .bin_name(format!("dropscope {}", sub.get_name()))
            .version(env!("CARGO_PKG_VERSION"));
        write(&name, sub)?;
    }
    write("dropscope", cmd)
}
