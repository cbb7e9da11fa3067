"""`dlx completion bash|zsh`: shell tab completion for dlx's commands and, after a Hydra command,
its config groups, options and keys (`dlx train mod<TAB>` -> `model=`, `model=c<TAB>` -> `model=cnn`).

    eval "$(dlx completion bash)"      # in ~/.bashrc
    eval "$(dlx completion zsh)"       # in ~/.zshrc

The shell asks `dlx completion --query` with the line typed so far in $COMP_LINE; the answers for
a Hydra command come from Hydra's own completion plugin over that command's config.
"""

from __future__ import annotations

import os
import sys

BASH = r'''_dlx_completion()
{
    local word="${COMP_WORDS[COMP_CWORD]}"
    local choices
    choices=$(COMP_LINE="${COMP_LINE:0:$COMP_POINT}" dlx completion --query 2>/dev/null)
    COMPREPLY=($(compgen -o nospace -W "$choices" -- "$word"))
}
COMP_WORDBREAKS=${COMP_WORDBREAKS//=}
complete -o nospace -o default -F _dlx_completion dlx
'''
ZSH = "autoload -U +X bashcompinit && bashcompinit\n" + BASH
# what the commands that are not Hydra apps take as their first word
SUBCOMMANDS = {"data": ["list", "download"], "users": ["add", "list", "revoke"], "report": ["experiments"]}


def candidates(line: str) -> list[str]:
    """What may come next on a `dlx ...` command line typed so far."""
    from dlx.cli import HYDRA_COMMANDS, OTHER_COMMANDS

    words = line.split()[1:]  # without `dlx`
    new_word = not line or line[-1].isspace()
    if not words or (len(words) == 1 and not new_word):
        typed = words[0] if words else ""
        return sorted(c for c in (*HYDRA_COMMANDS, *OTHER_COMMANDS) if c.startswith(typed))
    command, rest = words[0], words[1:]
    if command in HYDRA_COMMANDS:
        return _hydra(command, " ".join(rest) + (" " if new_word else ""))
    if command in SUBCOMMANDS and len(rest) + new_word == 1:
        typed = "" if new_word else rest[0]
        return [s for s in SUBCOMMANDS[command] if s.startswith(typed)]
    if command == "completion" and len(rest) + new_word == 1:
        return [s for s in ("bash", "zsh") if s.startswith("" if new_word else rest[0])]
    return []


def _hydra(command: str, line: str) -> list[str]:
    import logging

    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.core_plugins.bash_completion import BashCompletion
    from hydra._internal.utils import create_config_search_path

    from dlx import schemas

    logging.disable(logging.WARNING)  # a half-typed override may not compose; that is no news to print
    schemas.register()
    search = create_config_search_path(f"file://{schemas.command_conf_dir(command)}")
    return BashCompletion(ConfigLoaderImpl(config_search_path=search))._query(config_name=command, line=line)


def main(args: list[str]) -> int:
    if args == ["--query"]:
        try:
            print("\n".join(candidates(os.environ.get("COMP_LINE", ""))))
        except Exception:  # completion must never print a traceback into the user's prompt
            return 1
        return 0
    if len(args) == 1 and args[0] in ("bash", "zsh"):
        sys.stdout.write(BASH if args[0] == "bash" else ZSH)
        return 0
    print("dlx completion: error: expected bash or zsh: eval \"$(dlx completion bash)\"", file=sys.stderr)
    return 2
