"""Shell completion scripts for bash, zsh and fish, generated from the argparse parser.

Generated, never written by hand, so a new option completes the day it is added. No extra
dependency: shtab does this for bash and zsh but not fish, and what is needed here (commands,
their options, the choices of an option, file names elsewhere) is a few lines per shell.
"""

from __future__ import annotations

import argparse
import shlex

SHELLS = ("bash", "zsh", "fish")


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings]


def _help(parser: argparse.ArgumentParser, command: str) -> str:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if choice.dest == command:
                    return choice.help or ""
    return ""


def bash(parser: argparse.ArgumentParser, prog: str) -> str:
    commands = _commands(parser)
    function = "_" + prog.replace("-", "_")
    cases = []
    for name, sub in commands.items():
        flags = " ".join(f for a in _options(sub) for f in a.option_strings)
        choices = "".join(
            f"            {'|'.join(a.option_strings)}) "
            f"COMPREPLY=($(compgen -W {shlex.quote(' '.join(map(str, a.choices)))} "
            f'-- "$cur")); return ;;\n'
            for a in _options(sub)
            if a.choices
        )
        cases.append(
            f"        {name})\n"
            f'            case "$prev" in\n{choices}            esac\n'
            f'            if [[ "$cur" == -* ]]; then\n'
            f'                COMPREPLY=($(compgen -W "{flags}" -- "$cur"))\n'
            f"            else\n"
            f'                COMPREPLY=($(compgen -f -- "$cur"))\n'
            f"            fi ;;\n"
        )
    top = " ".join([*commands, *(f for a in _options(parser) for f in a.option_strings)])
    return (
        f"# bash completion for {prog} (generated: {prog} completion bash)\n"
        f"{function}() {{\n"
        f'    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"\n'
        f'    local command="" word\n'
        f'    for word in "${{COMP_WORDS[@]:1:COMP_CWORD-1}}"; do\n'
        f'        case "$word" in -*) ;; *) command="$word"; break ;; esac\n'
        f"    done\n"
        f'    case "$command" in\n'
        f'        "") COMPREPLY=($(compgen -W "{top}" -- "$cur")) ;;\n'
        f"{''.join(cases)}"
        f"    esac\n"
        f"}}\n"
        f"complete -o filenames -F {function} {prog}\n"
    )


def zsh(parser: argparse.ArgumentParser, prog: str) -> str:
    return (
        f"# zsh completion for {prog} (generated: {prog} completion zsh)\n"
        "autoload -U +X bashcompinit && bashcompinit\n" + bash(parser, prog)
    )


def fish(parser: argparse.ArgumentParser, prog: str) -> str:
    lines = [f"# fish completion for {prog} (generated: {prog} completion fish)"]
    commands = _commands(parser)
    names = " ".join(commands)
    for name in commands:
        lines.append(
            f"complete -c {prog} -f -n 'not __fish_seen_subcommand_from {names}' -a {name} "
            f"-d {shlex.quote(_help(parser, name))}"
        )
    for name, sub in commands.items():
        for action in _options(sub):
            parts = [f"complete -c {prog} -n '__fish_seen_subcommand_from {name}'"]
            for flag in action.option_strings:
                parts.append(f"-l {flag[2:]}" if flag.startswith("--") else f"-s {flag[1:]}")
            if action.choices:
                parts.append(f"-x -a {shlex.quote(' '.join(map(str, action.choices)))}")
            elif action.nargs != 0:
                parts.append("-r")
            if action.help and action.help != argparse.SUPPRESS:
                parts.append(f"-d {shlex.quote(action.help.split(';')[0][:80])}")
            lines.append(" ".join(parts))
    return "\n".join(lines) + "\n"


def script(shell: str, parser: argparse.ArgumentParser, prog: str) -> str:
    return {"bash": bash, "zsh": zsh, "fish": fish}[shell](parser, prog)
