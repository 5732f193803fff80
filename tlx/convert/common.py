"""What every converter family shares: the error type and its multi-problem message."""


class ConversionError(ValueError):
    """A checkpoint cannot be converted; the message names the tensor, field or path."""


def problems_error(what: str, problems: list[str]) -> ConversionError:
    return ConversionError(f"{what}:\n  " + "\n  ".join(problems))
