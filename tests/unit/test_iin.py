"""IIN validation: format, century/sex digit, birth date, both check-digit weight sequences."""

from __future__ import annotations

from datetime import date

import pytest

from probation.subjects.iin import IinError, birth_date_of, check_digit, make_iin, validate_iin


def test_first_weight_sequence_worked_example() -> None:
    # 9·1 + 0·2 + 0·3 + 1·4 + 0·5 + 1·6 + 3·7 + 0·8 + 0·9 + 0·10 + 1·11 = 51; 51 mod 11 = 7
    assert validate_iin("900101300017", date(1990, 1, 1)) == "900101300017"
    for wrong in "012345689":
        with pytest.raises(IinError) as e:
            validate_iin("90010130001" + wrong)
        assert e.value.code == "iin_checksum"


def test_second_weight_sequence_when_the_first_gives_10() -> None:
    # weights 1..11: 142 mod 11 = 10 → weights 3..11,1,2: 135 mod 11 = 3
    assert check_digit([int(c) for c in "05031550050"]) == 3
    assert validate_iin("050315500503", date(2005, 3, 15))
    with pytest.raises(IinError):
        validate_iin("050315500500")


def test_both_sequences_giving_10_is_never_valid() -> None:
    # 120 mod 11 = 10 and 76 mod 11 = 10
    assert check_digit([int(c) for c in "90010130080"]) is None
    for last in "0123456789":
        with pytest.raises(IinError) as e:
            validate_iin("90010130080" + last)
        assert e.value.code == "iin_checksum"


@pytest.mark.parametrize("bad", ["", "12345678901", "1234567890123", "90010130001a", "\uff19\uff10\uff10\uff11\uff10\uff11\uff13\uff10\uff10\uff10\uff11\uff17"])
def test_format(bad: str) -> None:
    with pytest.raises(IinError) as e:
        validate_iin(bad)
    assert e.value.code == "iin_format"


@pytest.mark.parametrize(("digit", "year"), [(1, 1890), (2, 1890), (3, 1990), (4, 1990), (5, 2005), (6, 2005)])
def test_century_and_sex_digit(digit: int, year: int) -> None:
    born = date(year, 6, 30)
    iin = make_iin(born, "f" if digit % 2 == 0 else "m")
    assert iin[6] == str(digit)
    assert birth_date_of(iin) == born
    assert validate_iin(iin, born) == iin


@pytest.mark.parametrize("digit", ["0", "7", "8", "9"])
def test_century_digit_out_of_range(digit: str) -> None:
    with pytest.raises(IinError) as e:
        validate_iin("900101" + digit + "00017")
    assert e.value.code == "iin_century"


def test_birth_date_must_match() -> None:
    iin = make_iin(date(1990, 1, 1))
    with pytest.raises(IinError) as e:
        validate_iin(iin, date(1990, 1, 2))
    assert e.value.code == "iin_birth_date"
    # the same YYMMDD in another century does not match either
    with pytest.raises(IinError):
        validate_iin(iin, date(2090, 1, 1))


def test_impossible_date() -> None:
    with pytest.raises(IinError) as e:
        birth_date_of("900230300000")
    assert e.value.code == "iin_birth_date"
