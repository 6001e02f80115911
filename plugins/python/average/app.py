"""average in Python: the mean of numeric values per key, within one batch,
as `plugins/average` (Rust) computes and prints it. Each value is a number in
decimal text; records without a key are grouped under the empty key. One
record per key, in order of first appearance: key = the key, value = the mean
as Rust prints an f64, timestamp = the latest of the group. A value that is
not a number is dead-lettered with the Rust plugin's message."""
import re

import sluice

# Rust's `char::is_whitespace` (Unicode White_Space), which `str::trim`
# strips; Python's `str.strip()` would also strip U+001C..U+001F.
WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
# Rust's `f64` decimal syntax (`float()` also reads `1_000`, and digits of
# other scripts). `inf` and `nan` are not finite, so not numbers here.
DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# The longest excerpt of a bad value in a message, in characters.
EXCERPT_CHARS = 64


def read_number(value):
    """The finite number in `value` (bytes), or a `RecordError`."""
    text = value.decode("utf-8", errors="replace")
    trimmed = text.strip(WHITESPACE)
    if DECIMAL.fullmatch(trimmed):
        number = float(trimmed)
        if abs(number) != float("inf"):
            return number
    if len(text) > EXCERPT_CHARS:
        text = text[:EXCERPT_CHARS] + "…"
    raise sluice.RecordError(f"value `{text}` is not a number")


def rust_display(x):
    """`x` as Rust's `{}` prints an f64: the shortest digits that read back
    as `x` (which `repr` finds), laid out without an exponent; `inf` and
    `-inf` as Rust spells them (a sum can overflow)."""
    if abs(x) == float("inf"):
        return repr(x)
    sign, digits, point = parts(repr(x))
    if not digits:
        return sign + "0"
    if point <= 0:
        text = "0." + "0" * -point + digits
    elif point >= len(digits):
        text = digits + "0" * (point - len(digits))
    else:
        text = digits[:point] + "." + digits[point:]
    return sign + text


def parts(shortest):
    """`repr` of a float as (sign, significant digits, position of the
    decimal point from the start of the digits)."""
    sign = "-" if shortest.startswith("-") else ""
    mantissa, _, exp = shortest.lstrip("-").partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).rstrip("0")
    significant = digits.lstrip("0")
    point = len(whole) + int(exp or 0) - (len(digits) - len(significant))
    return sign, significant, point


class Average(sluice.Stage):
    def __init__(self, config):
        if "field" in config:
            raise sluice.ConfigError(
                "`field` (a JSON field) is not supported by the Python average: use the Rust `average`"
            )
        config.allow_only([])

    def process(self, records, out):
        groups = {}
        for record in records:
            try:
                number = read_number(record.value)
            except sluice.RecordError as e:
                out.fail(record, e)
                continue
            key = record.key or b""
            group = groups.get(key)
            if group is None:
                # From +0.0, as Rust's sum: -0.0 alone averages to 0.
                groups[key] = [0.0 + number, 1, record.timestamp]
            else:
                group[0] += number
                group[1] += 1
                group[2] = max(group[2], record.timestamp)
        for key, (total, count, latest) in groups.items():
            out.emit(rust_display(total / count), key=key, timestamp=latest)


Processor = sluice.processor(Average)
