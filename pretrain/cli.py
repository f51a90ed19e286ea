"""`key=value` arguments of the launch/ doors that are not Hydra apps. Imports nothing heavy, so a door
checks its arguments before torch or transformers load."""

from __future__ import annotations


def parse_key_values(argv: list[str], required: tuple[str, ...], optional: dict[str, object]) -> dict:
    """Unknown, missing or mistyped keys end the program with a one-line message; a value is
    converted to the type of its default (bools accept true/false; a default of None keeps the string)."""
    args = dict(optional)
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in (*required, *optional):
            raise SystemExit(f"error: unexpected argument {item!r}; expected key=value with key in "
                             f"{', '.join((*required, *optional))}")
        default = optional.get(key)
        if isinstance(default, bool):
            if value.lower() not in ("true", "false"):
                raise SystemExit(f"error: {key} must be true or false, got {value!r}")
            args[key] = value.lower() == "true"
        elif default is not None:
            try:
                args[key] = type(default)(value)
            except ValueError:
                kind = "an integer" if isinstance(default, int) else "a number"
                raise SystemExit(f"error: {key} must be {kind}, got {value!r}") from None
        else:
            args[key] = value
    missing = [k for k in required if k not in args]
    if missing:
        raise SystemExit(f"error: missing required argument(s): {', '.join(k + '=...' for k in missing)}")
    return args


def check_overrides(config_dir: str, config_name: str, argv: list[str]) -> None:
    """Compose a Hydra door's config from its command-line overrides once, up front, and end the program
    with a one-line message if that fails (Hydra's own report spans several lines)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = [a for a in argv if not a.startswith(("-", "hydra."))]
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base=None):
            compose(config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as e:
        raise SystemExit(f"error: {one_line(e)}") from None


def one_line(e: BaseException) -> str:
    """Hydra's message in one line: its first line, the options it lists, and what caused it."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    text = lines[0].rstrip(".") if lines else type(e).__name__
    if any(line.startswith("Available options") for line in lines):
        start = next(i for i, line in enumerate(lines) if line.startswith("Available options")) + 1
        options = [line for line in lines[start:] if not line.startswith(("Config search path", "provider="))]
        text += f" (available: {', '.join(options)})"
    cause = str(e.__cause__ or "").strip()
    if cause:
        text += ": " + cause.splitlines()[0]
    elif len(lines) > 1 and not lines[1].startswith(("See ", "To append", "Available options")):
        text += ": " + lines[1]
    return text
