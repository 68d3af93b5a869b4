"""Suite options as the tools take them on their command lines (-D NAME=VALUE) and pass them on to behave."""
from __future__ import annotations


def parse_defines(pairs: list[str]) -> dict[str, str]:
    """{NAME: VALUE} from -D arguments; ValueError names the first one that is not NAME=VALUE."""
    defines = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"-D {pair!r} is not NAME=VALUE")
        defines[name] = value
    return defines


def define_args(defines: dict[str, str]) -> list[str]:
    """The behave arguments that give these suite options: ["-D", "NAME=VALUE", ...]."""
    return [arg for name, value in defines.items() for arg in ("-D", f"{name}={value}")]
