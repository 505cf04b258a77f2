"""The one error type users see. Every message names the problem and the fix."""


class LoihiConvError(Exception):
    """A problem with the user's input or environment, with a message saying how to fix it.

    The CLI prints it without a traceback (unless --debug) and exits with ``exit_code``.
    """

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if not fix else f"{problem}\n  fix: {fix}")


class NetXFormatError(LoihiConvError):
    """A NetX file that is malformed, truncated or unsupported."""

    exit_code = 3


def reject_unknown(given, known, what: str) -> None:
    """One LoihiConvError listing every key of ``given`` not in ``known`` (``what``: e.g.
    "recipe" or "quantize"), and the known ones."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise LoihiConvError(f"{what}: unknown option(s) {', '.join(unknown)}",
                             f"known options: {', '.join(sorted(known))}")
