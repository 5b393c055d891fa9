"""mkdocs hook: the options page's tables, made from radam's option table.

``docs/options.md`` holds the marker ``<!-- option-table -->``; this hook
replaces it with one row per option of ``radam._options.OPTIONS`` (name,
default, what it means, which update rules take it, whether it is per group)
and one row per class of ``VARIANTS`` (its rule and the defaults it changes),
so the page cannot drift from what the classes accept.
"""

from __future__ import annotations

MARKER = "<!-- option-table -->"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|")


def option_tables() -> str:
    from radam import _options

    rows = [
        "| option | default | per group | update rules | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for option in _options.OPTIONS:
        rules = "all" if option.rules is None else ", ".join(option.rules)
        rows.append(
            f"| `{option.name}` | `{option.default!r}` | {'yes' if option.group else 'no'} "
            f"| {rules} | {_cell(option.doc)} |"
        )
    rows += [
        "",
        "| class | update rule | defaults that differ from `Adam`'s | fixed options |",
        "| --- | --- | --- | --- |",
    ]
    for name, variant in _options.VARIANTS.items():
        changed = ", ".join(f"`{k}={v!r}`" for k, v in variant.defaults.items()) or "none"
        fixed = ", ".join(f"`{k}={v!r}`" for k, v in variant.fixed.items()) or "none"
        rows.append(f"| `radam.{name}` | {variant.rule} | {changed} | {fixed} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, option_tables())
