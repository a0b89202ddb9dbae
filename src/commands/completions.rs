//! `banger completions SHELL`, the hidden `banger man`, and the hidden
//! `banger __complete KIND` that completion scripts call for VM and image names.

use std::io::Write;

use anyhow::Result;
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{Cli, CompletionsArgs};
use crate::state::paths::Paths;
use crate::state::store::Store;

/// Subcommands of `vm` whose positional arguments are VM names.
const VM_NAME_COMMANDS: &str = "start stop restart delete rm show inspect ssh logs";
/// Subcommands of `image` whose positional argument is an image name.
const IMAGE_NAME_COMMANDS: &str = "show inspect delete rm default";
/// Subcommands of `pool` whose positional argument is an image name.
const POOL_IMAGE_COMMANDS: &str = "set delete rm";

pub fn run(args: CompletionsArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(script(args.shell).as_bytes())?;
    Ok(())
}

/// The full completion script for `shell`: clap's static script plus a hook
/// completing VM and image names from the database.
pub fn script(shell: Shell) -> String {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "banger", &mut buf);
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    text.push_str(&dynamic_hook(shell));
    text
}

fn dynamic_hook(shell: Shell) -> String {
    match shell {
        Shell::Bash => format!(
            r#"
# Names of VMs and images, completed from banger's database.
_banger_names() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}"
    if [[ $COMP_CWORD -ge 3 && "$cur" != -* ]]; then
        case "${{COMP_WORDS[1]}} ${{COMP_WORDS[2]}}" in
            {vm_cases})
                COMPREPLY=($(compgen -W "$(banger __complete vm 2>/dev/null)" -- "$cur")); return 0 ;;
            {image_cases})
                COMPREPLY=($(compgen -W "$(banger __complete image 2>/dev/null)" -- "$cur")); return 0 ;;
        esac
    fi
    _banger "$@"
}}
complete -F _banger_names -o bashdefault -o default banger
"#,
            vm_cases = cases("vm", VM_NAME_COMMANDS),
            image_cases = image_cases(),
        ),
        Shell::Fish => format!(
            "\n# Names of VMs and images, completed from banger's database.\n\
             complete -c banger -n '__fish_seen_subcommand_from vm; and __fish_seen_subcommand_from {VM_NAME_COMMANDS}' -f -a '(banger __complete vm 2>/dev/null)'\n\
             complete -c banger -n '__fish_seen_subcommand_from image; and __fish_seen_subcommand_from {IMAGE_NAME_COMMANDS}' -f -a '(banger __complete image 2>/dev/null)'\n\
             complete -c banger -n '__fish_seen_subcommand_from pool; and __fish_seen_subcommand_from {POOL_IMAGE_COMMANDS}' -f -a '(banger __complete image 2>/dev/null)'\n"
        ),
        Shell::Zsh => format!(
            "\n# Names of VMs and images, completed from banger's database.\n\
             _banger_names() {{\n\
             \x20   if (( CURRENT >= 4 )) && [[ ${{words[CURRENT]}} != -* ]]; then\n\
             \x20       case \"${{words[2]}} ${{words[3]}}\" in\n\
             \x20           {vm_cases}) compadd -- ${{(f)\"$(banger __complete vm 2>/dev/null)\"}}; return ;;\n\
             \x20           {image_cases}) compadd -- ${{(f)\"$(banger __complete image 2>/dev/null)\"}}; return ;;\n\
             \x20       esac\n\
             \x20   fi\n\
             \x20   _banger \"$@\"\n\
             }}\n\
             compdef _banger_names banger\n",
            vm_cases = cases("vm", VM_NAME_COMMANDS),
            image_cases = image_cases(),
        ),
        _ => String::new(),
    }
}

/// The `image` and `pool` subcommands that take an image name.
fn image_cases() -> String {
    format!(
        "{}|{}",
        cases("image", IMAGE_NAME_COMMANDS),
        cases("pool", POOL_IMAGE_COMMANDS)
    )
}

fn cases(group: &str, commands: &str) -> String {
    commands
        .split(' ')
        .map(|c| format!("\"{group} {c}\""))
        .collect::<Vec<_>>()
        .join("|")
}

/// Prints names for completion: read-only, quiet, and empty when the
/// database is missing or unreadable (e.g. for a non-root user).
pub fn names(kind: &str) -> Result<()> {
    let paths = Paths::from_env();
    let Some(store) = Store::open_read_only(&paths.db()) else {
        return Ok(());
    };
    let names = match kind {
        "vm" => store.vm_names(),
        "image" => store.image_names(),
        _ => Ok(Vec::new()),
    }
    .unwrap_or_default();
    let mut out = std::io::stdout().lock();
    for name in names {
        writeln!(out, "{name}")?;
    }
    Ok(())
}

/// Prints the man page (roff) to stdout.
pub fn man() -> Result<()> {
    let page = clap_mangen::Man::new(Cli::command());
    page.render(&mut std::io::stdout().lock())?;
    Ok(())
}
