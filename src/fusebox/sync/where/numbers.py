"""Integers, numeric and floats with Postgres's exact semantics.

- Integers are Python ints, range-checked after every operation (Postgres raises
  "integer out of range" rather than wrapping).
- numeric is `Decimal`. Its exponent plays the role of Postgres's display scale, so
  `1.50 + 1` prints `2.50` as Postgres does; division uses Postgres's own result-scale
  rule (`select_div_scale`) and rounds half away from zero, so `1/3` has 20 digits.
- float8 is a Python float; float4 is a Python float holding an exactly representable
  binary32 value, re-rounded after each operation.

Input functions accept the syntax of PostgreSQL 16+ (`0x1F`, `1_000`), a superset of
older versions: where an old server rejects such text, it raises and we do not, which
never turns a Postgres error into a wrong answer on our side.
"""

from __future__ import annotations

import decimal
import math
import re
import struct
from decimal import Decimal
from fractions import Fraction

from .errors import WhereEvalError
from .types import INT_RANGE, PgType

# Exact arithmetic for + - * and remainders: numeric never rounds in these operations.
EXACT = decimal.Context(
    prec=decimal.MAX_PREC,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    traps=[decimal.DivisionByZero, decimal.Overflow],
)
NUMERIC_NAN = Decimal("NaN")
_ZERO = Decimal(0)
_WHITESPACE = " \t\n\r\v\f"

# Postgres limits on numeric: digits before the point and the display scale.
_NUMERIC_MAX_WEIGHT_DIGITS = 131072
_NUMERIC_MAX_DSCALE = 16383
_NUMERIC_MIN_SIG_DIGITS = 16
_NUMERIC_MAX_DISPLAY_SCALE = 1000


class InputError(ValueError):
    """Text that a type's input function rejects (the message is Postgres's)."""


def out_of_range(type_name: str) -> WhereEvalError:
    if type_name == "int2":
        return WhereEvalError("smallint out of range")
    if type_name == "int8":
        return WhereEvalError("bigint out of range")
    return WhereEvalError("integer out of range")


def check_int(value: int, type_name: str) -> int:
    low, high = INT_RANGE[type_name]
    if value < low or value > high:
        raise out_of_range(type_name)
    return value


# -- integers -----------------------------------------------------------------------------

_DIGITS = r"[0-9](?:_?[0-9])*"
_INT_INPUT = re.compile(
    r"([+-]?)(?:0[xX]((?:_?[0-9a-fA-F])+)|0[oO]((?:_?[0-7])+)|0[bB]((?:_?[01])+)|("
    + _DIGITS
    + r"))"
)


def parse_int_input(text: str, pg_type: PgType) -> int:
    """int2in/int4in/int8in: optional whitespace and sign, then an integer."""
    match = _INT_INPUT.fullmatch(text.strip(_WHITESPACE))
    if match is None:
        raise InputError(f'invalid input syntax for type {pg_type}: "{text}"')
    sign, hexa, octal, binary, decimal_digits = match.groups()
    if hexa is not None:
        value = int(hexa.replace("_", ""), 16)
    elif octal is not None:
        value = int(octal.replace("_", ""), 8)
    elif binary is not None:
        value = int(binary.replace("_", ""), 2)
    else:
        value = int(decimal_digits.replace("_", ""))
    if sign == "-":
        value = -value
    low, high = INT_RANGE[pg_type.name]
    if value < low or value > high:
        raise InputError(f'value "{text}" is out of range for type {pg_type}')
    return value


def int_div(a: int, b: int, type_name: str) -> int:
    """C division: truncates toward zero."""
    if b == 0:
        raise WhereEvalError("division by zero")
    quotient = abs(a) // abs(b)
    if (a < 0) != (b < 0):
        quotient = -quotient
    return check_int(quotient, type_name)


def int_mod(a: int, b: int) -> int:
    """C remainder: takes the sign of the dividend (INT_MIN % -1 is 0, as Postgres makes it)."""
    if b == 0:
        raise WhereEvalError("division by zero")
    remainder = abs(a) % abs(b)
    return -remainder if a < 0 else remainder


# -- numeric ------------------------------------------------------------------------------

_NUMERIC_INPUT = re.compile(
    r"[+-]?(?:" + _DIGITS + r"(?:\.(?:" + _DIGITS + r")?)?|\.(?:" + _DIGITS + r"))"
    r"(?:[eE][+-]?[0-9]+)?"
)
_NUMERIC_SPECIAL = {
    "nan": NUMERIC_NAN,
    "infinity": Decimal("Infinity"),
    "+infinity": Decimal("Infinity"),
    "-infinity": Decimal("-Infinity"),
    "inf": Decimal("Infinity"),
    "+inf": Decimal("Infinity"),
    "-inf": Decimal("-Infinity"),
}


def normalize_numeric(value: Decimal) -> Decimal:
    """Postgres numerics have a display scale >= 0 and no negative zero."""
    if not value.is_finite():
        return value
    if value.as_tuple().exponent > 0:  # type: ignore[operator]
        value = value.quantize(Decimal(1), context=EXACT)
    if value.is_zero() and value.is_signed():
        value = value.copy_abs()
    return value


def check_numeric(value: Decimal) -> Decimal:
    if value.is_finite() and not value.is_zero():
        if value.adjusted() >= _NUMERIC_MAX_WEIGHT_DIGITS:
            raise WhereEvalError("value overflows numeric format")
        if -value.as_tuple().exponent > _NUMERIC_MAX_DSCALE:  # type: ignore[operator]
            raise WhereEvalError("value overflows numeric format")
    return value


def parse_numeric_input(text: str) -> Decimal:
    """numeric_in."""
    stripped = text.strip(_WHITESPACE)
    special = _NUMERIC_SPECIAL.get(stripped.lower())
    if special is not None:
        return special
    if _NUMERIC_INPUT.fullmatch(stripped):
        value = Decimal(stripped.replace("_", ""))
    else:
        match = _INT_INPUT.fullmatch(stripped)
        if match is None or match.group(5) is not None:
            raise InputError(f'invalid input syntax for type numeric: "{text}"')
        value = Decimal(_big_int(match))
    try:
        return check_numeric(normalize_numeric(value))
    except WhereEvalError as exc:
        raise InputError(str(exc)) from None


def _big_int(match: re.Match[str]) -> int:
    sign, hexa, octal, binary, _ = match.groups()
    if hexa is not None:
        value = int(hexa.replace("_", ""), 16)
    elif octal is not None:
        value = int(octal.replace("_", ""), 8)
    else:
        value = int(binary.replace("_", ""), 2)
    return -value if sign == "-" else value


def parse_numeric_output(text: str) -> Decimal:
    """A numeric as Postgres prints it: plain notation, or NaN/Infinity/-Infinity."""
    return Decimal(text)


def format_numeric(value: Decimal) -> str:
    if value.is_nan():
        return "NaN"
    if value.is_infinite():
        return "-Infinity" if value.is_signed() else "Infinity"
    return format(value, "f")


def numeric_add(a: Decimal, b: Decimal) -> Decimal:
    # Infinity - Infinity is NaN in Postgres; decimal signals InvalidOperation for it.
    if a.is_nan() or b.is_nan():
        return NUMERIC_NAN
    if a.is_infinite() and b.is_infinite() and a.is_signed() != b.is_signed():
        return NUMERIC_NAN
    return check_numeric(normalize_numeric(EXACT.add(a, b)))


def numeric_sub(a: Decimal, b: Decimal) -> Decimal:
    return numeric_add(a, b.copy_negate())


def numeric_mul(a: Decimal, b: Decimal) -> Decimal:
    if a.is_nan() or b.is_nan():
        return NUMERIC_NAN
    if (a.is_infinite() and b.is_zero()) or (b.is_infinite() and a.is_zero()):
        return NUMERIC_NAN
    return check_numeric(normalize_numeric(EXACT.multiply(a, b)))


def _dscale(value: Decimal) -> int:
    return max(0, -value.as_tuple().exponent)  # type: ignore[operator]


def _weight_and_first_digit(value: Decimal) -> tuple[int, int]:
    """The weight and leading digit of `value` in Postgres's base-10000 representation."""
    if value.is_zero():
        return 0, 0
    value = abs(value)
    weight = value.adjusted() // 4
    _sign, digits, exponent = value.as_tuple()
    mantissa = int("".join(map(str, digits)))
    shift = exponent - 4 * weight  # type: ignore[operator]
    scaled = mantissa * 10**shift if shift >= 0 else mantissa // 10**-shift
    return weight, scaled % 10000


def _div_scale(a: Decimal, b: Decimal) -> int:
    """select_div_scale: at least 16 significant digits, never less than either input's scale."""
    weight1, first1 = _weight_and_first_digit(a)
    weight2, first2 = _weight_and_first_digit(b)
    qweight = weight1 - weight2
    if first1 <= first2:
        qweight -= 1
    rscale = _NUMERIC_MIN_SIG_DIGITS - qweight * 4
    rscale = max(rscale, _dscale(a), _dscale(b), 0)
    return min(rscale, _NUMERIC_MAX_DISPLAY_SCALE)


def round_half_away(value: Fraction, scale: int) -> Decimal:
    scaled = value * 10**scale
    quotient, remainder = divmod(abs(scaled.numerator), scaled.denominator)
    if 2 * remainder >= scaled.denominator:
        quotient += 1
    negative = scaled < 0 and quotient != 0
    return Decimal(f"{'-' if negative else ''}{quotient}E-{scale}")


def numeric_div(a: Decimal, b: Decimal) -> Decimal:
    if a.is_nan() or b.is_nan():
        return NUMERIC_NAN
    if a.is_infinite():
        if b.is_infinite():
            return NUMERIC_NAN
        if b.is_zero():
            raise WhereEvalError("division by zero")
        return a if not b.is_signed() else a.copy_negate()
    if b.is_infinite():
        return _ZERO
    if b.is_zero():
        raise WhereEvalError("division by zero")
    scale = _div_scale(a, b)
    return check_numeric(round_half_away(Fraction(a) / Fraction(b), scale))


def numeric_mod(a: Decimal, b: Decimal) -> Decimal:
    if a.is_nan() or b.is_nan():
        return NUMERIC_NAN
    if a.is_infinite():
        if b.is_zero():
            raise WhereEvalError("division by zero")
        return NUMERIC_NAN
    if b.is_infinite():
        return a
    if b.is_zero():
        raise WhereEvalError("division by zero")
    return normalize_numeric(EXACT.remainder(a, b))


def numeric_neg(a: Decimal) -> Decimal:
    return normalize_numeric(a.copy_negate()) if not a.is_nan() else a


def numeric_abs(a: Decimal) -> Decimal:
    return a.copy_abs() if not a.is_nan() else a


def numeric_to_int(value: Decimal, type_name: str) -> int:
    if value.is_nan():
        raise WhereEvalError(f"cannot convert NaN to {_int_word(type_name)}")
    if value.is_infinite():
        raise WhereEvalError(f"cannot convert infinity to {_int_word(type_name)}")
    rounded = int(value.to_integral_value(rounding=decimal.ROUND_HALF_UP, context=EXACT))
    return check_int(rounded, type_name)


def _int_word(type_name: str) -> str:
    return {"int2": "smallint", "int4": "integer", "int8": "bigint"}[type_name]


def numeric_to_float8(value: Decimal) -> float:
    # numeric_float8 goes through float8in, so overflow and underflow to zero raise.
    return parse_float8_input(format_numeric(value), errors=WhereEvalError)


def numeric_to_float4(value: Decimal) -> float:
    return parse_float4_input(format_numeric(value), errors=WhereEvalError)


def float_to_numeric(value: float, digits: int) -> Decimal:
    """float8_numeric / float4_numeric: printf("%.15g") (or %.6g), then numeric_in."""
    if math.isnan(value):
        return NUMERIC_NAN
    if math.isinf(value):
        return Decimal("-Infinity") if value < 0 else Decimal("Infinity")
    return normalize_numeric(Decimal(f"{value:.{digits}g}"))


# -- floats -------------------------------------------------------------------------------

_F32 = struct.Struct("<f")
_U32 = struct.Struct("<I")
_FLOAT_INPUT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_FLOAT_HEX = re.compile(
    r"[+-]?0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?[0-9]+)?"
)
_FLOAT_WORDS = {
    "nan": math.nan,
    "+nan": math.nan,
    "-nan": math.nan,
    "inf": math.inf,
    "+inf": math.inf,
    "-inf": -math.inf,
    "infinity": math.inf,
    "+infinity": math.inf,
    "-infinity": -math.inf,
}


def to_float4(value: float) -> float:
    """Round a double to the nearest binary32 (ties to even); raises on overflow."""
    try:
        return _F32.unpack(_F32.pack(value))[0]
    except OverflowError:
        raise WhereEvalError("value out of range: overflow") from None


def _next_float4(value: float, up: bool) -> float:
    bits = _U32.unpack(_F32.pack(value))[0]
    if value == 0:
        bits = 1 if up else 0x80000001
    elif (value > 0) == up:
        bits += 1
    else:
        bits -= 1
    return _F32.unpack(_U32.pack(bits))[0]


def _decimal_to_float4(text: str, double: float) -> float:
    """strtof(text): correctly rounded, which rounding via the double may not be on a tie."""
    single = to_float4(double)
    if single == double or math.isinf(single) or math.isinf(double):
        return single
    other = _next_float4(single, double > single)
    midpoint = (single + other) / 2
    if midpoint != double:
        return single
    exact = Decimal(text)
    if exact == Decimal(midpoint):
        return single  # a true tie: the cast already picked the even neighbour
    above = exact > Decimal(midpoint)
    return max(single, other) if above else min(single, other)


def _parse_float(text: str, errors: type[Exception], type_word: str) -> tuple[float, str]:
    stripped = text.strip(_WHITESPACE)
    word = _FLOAT_WORDS.get(stripped.lower())
    if word is not None:
        return word, ""
    if _FLOAT_INPUT.fullmatch(stripped):
        return float(stripped), stripped
    if _FLOAT_HEX.fullmatch(stripped):
        unsigned = stripped.lstrip("+-")
        value = float.fromhex(unsigned)
        return (-value if stripped.startswith("-") else value), ""
    raise errors(f'invalid input syntax for type {type_word}: "{text}"')


def _mantissa_is_zero(decimal_text: str) -> bool:
    mantissa = decimal_text.split("e")[0].split("E")[0]
    return not any(ch in "123456789" for ch in mantissa)


def parse_float8_input(text: str, errors: type[Exception] = InputError) -> float:
    """float8in: strtod, with out-of-range results (overflow, underflow to 0) rejected."""
    value, decimal_text = _parse_float(text, errors, "double precision")
    if decimal_text and (
        math.isinf(value) or (value == 0.0 and not _mantissa_is_zero(decimal_text))
    ):
        raise errors(f'"{text}" is out of range for type double precision')
    return value


def parse_float4_input(text: str, errors: type[Exception] = InputError) -> float:
    """float4in: strtof, correctly rounded to binary32."""
    value, decimal_text = _parse_float(text, errors, "real")
    if not decimal_text:
        if math.isinf(value) or math.isnan(value):
            return value
        try:
            return _F32.unpack(_F32.pack(value))[0]
        except OverflowError:
            raise errors(f'"{text}" is out of range for type real') from None
    if math.isinf(value):
        raise errors(f'"{text}" is out of range for type real')
    try:
        single = _decimal_to_float4(decimal_text, value)
    except WhereEvalError:
        raise errors(f'"{text}" is out of range for type real') from None
    if math.isinf(single) or (single == 0.0 and not _mantissa_is_zero(decimal_text)):
        raise errors(f'"{text}" is out of range for type real')
    return single


def parse_float8_output(text: str) -> float:
    return float(text)


def parse_float4_output(text: str) -> float:
    value = float(text)
    if math.isinf(value) or math.isnan(value):
        return value
    return _decimal_to_float4(text, value)


def int_to_float4(value: int) -> float:
    return _decimal_to_float4(str(value), float(value))


def float_to_int(value: float, type_name: str) -> int:
    """dtoi4 and friends: rint() (half to even), then a range check."""
    if math.isnan(value) or math.isinf(value):
        raise out_of_range(type_name)
    return check_int(round(value), type_name)


def float_overflow() -> WhereEvalError:
    return WhereEvalError("value out of range: overflow")


def float_underflow() -> WhereEvalError:
    return WhereEvalError("value out of range: underflow")


def float8_add(a: float, b: float) -> float:
    result = a + b
    if math.isinf(result) and not math.isinf(a) and not math.isinf(b):
        raise float_overflow()
    return result


def float8_sub(a: float, b: float) -> float:
    result = a - b
    if math.isinf(result) and not math.isinf(a) and not math.isinf(b):
        raise float_overflow()
    return result


def float8_mul(a: float, b: float) -> float:
    result = a * b
    if math.isinf(result) and not math.isinf(a) and not math.isinf(b):
        raise float_overflow()
    if result == 0.0 and a != 0.0 and b != 0.0:
        raise float_underflow()
    return result


def float8_div(a: float, b: float) -> float:
    if b == 0.0:
        if math.isnan(a):
            return a
        raise WhereEvalError("division by zero")
    result = a / b
    if math.isinf(result) and not math.isinf(a):
        raise float_overflow()
    if result == 0.0 and a != 0.0 and not math.isinf(b):
        raise float_underflow()
    return result


def _float4_result(result: float, a: float, b: float, check_underflow: bool) -> float:
    """Round a double-precision result of binary32 inputs as float4 arithmetic would.

    The double result of + - * / on binary32 inputs rounds to the same binary32 as the
    single-precision operation would (53 >= 2*24 + 2 bits), so this is exact.
    """
    try:
        single = _F32.unpack(_F32.pack(result))[0]
    except OverflowError:
        single = math.inf
    if math.isinf(single) and not math.isinf(a) and not math.isinf(b):
        raise float_overflow()
    if check_underflow and single == 0.0 and a != 0.0 and b != 0.0:
        raise float_underflow()
    return single


def float4_add(a: float, b: float) -> float:
    return _float4_result(a + b, a, b, False)


def float4_sub(a: float, b: float) -> float:
    return _float4_result(a - b, a, b, False)


def float4_mul(a: float, b: float) -> float:
    return _float4_result(a * b, a, b, True)


def float4_div(a: float, b: float) -> float:
    if b == 0.0:
        if math.isnan(a):
            return a
        raise WhereEvalError("division by zero")
    result = a / b
    try:
        single = _F32.unpack(_F32.pack(result))[0]
    except OverflowError:
        single = math.inf
    if math.isinf(single) and not math.isinf(a):
        raise float_overflow()
    if single == 0.0 and a != 0.0 and not math.isinf(b):
        raise float_underflow()
    return single


def float8_pow(x: float, y: float) -> float:
    """dpow, including Postgres's explicit NaN, infinity and error cases."""
    if math.isnan(x):
        return math.nan if (math.isnan(y) or y != 0.0) else 1.0
    if math.isnan(y):
        return math.nan if x != 1.0 else 1.0
    if x == 0 and y < 0:
        raise WhereEvalError("zero raised to a negative power is undefined")
    if x < 0 and math.isfinite(y) and math.floor(y) != y:  # floor(inf) is inf in C
        raise WhereEvalError(
            "a negative number raised to a non-integer power yields a complex result"
        )
    if math.isinf(y):
        absx = abs(x)
        if absx == 1.0:
            return 1.0
        if y > 0:
            return y if absx > 1.0 else 0.0
        return 0.0 if absx > 1.0 else -y
    if math.isinf(x):
        if y == 0.0:
            return 1.0
        if x > 0:
            return x if y > 0 else 0.0
        odd = math.floor(y / 2) != y / 2
        if y > 0:
            return x if odd else -x
        return -0.0 if odd else 0.0
    try:
        result = math.pow(x, y)
    except OverflowError:
        raise float_overflow() from None
    if math.isinf(result):
        raise float_overflow()
    if result == 0.0 and x != 0.0:
        raise float_underflow()
    return result


def float8_sqrt(x: float) -> float:
    if x < 0:
        raise WhereEvalError("cannot take square root of a negative number")
    return math.sqrt(x)


# -- comparison keys ----------------------------------------------------------------------
# Postgres orders NaN above every other value and equal to itself, for floats and numeric.


def float_lt(a: float, b: float) -> bool:
    if a != a:
        return False
    if b != b:
        return True
    return a < b


def float_eq(a: float, b: float) -> bool:
    return a == b or (a != a and b != b)


def numeric_lt(a: Decimal, b: Decimal) -> bool:
    if a.is_nan():
        return False
    if b.is_nan():
        return True
    return a < b


def numeric_eq(a: Decimal, b: Decimal) -> bool:
    if a.is_nan() or b.is_nan():
        return a.is_nan() and b.is_nan()
    return a == b


class _NaN:
    """The hashable stand-in for NaN in sets: NaN equals NaN in Postgres."""

    def __repr__(self) -> str:
        return "NaN"


NAN_KEY = _NaN()


def float_key(value: float) -> object:
    return NAN_KEY if value != value else value


def numeric_key(value: Decimal) -> object:
    return NAN_KEY if value.is_nan() else value
