"""placeholder"""


def add_arguments(options) -> None:
    options.add_argument("--proxy", action="store_true")


def run(args) -> int:
    return 2
