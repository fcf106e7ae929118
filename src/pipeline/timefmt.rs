//! Event times written by applications: RFC 3339 strings and epoch numbers.
//!
//! What comes in: the value of a time field the JSON walker found (`"time"`, `"@timestamp"`,
//! `"ts"`, …) as bytes, or as a JSON number. What goes out: a [`Timestamp`] (seconds and
//! nanoseconds since the Unix epoch, UTC), or `None` when the value is not a time we can read.
//! These run once per log line: byte slices in, a `Copy` value out, no allocation, and no input
//! makes them panic.
//!
//! Invariants of every `Some` result: `secs >= 0` (OTLP's `time_unix_nano` is unsigned, and
//! pre-1970 times in logs are placeholders such as Go's zero time `0001-01-01T00:00:00Z`) and
//! `nanos < 1_000_000_000`.
//!
//! RFC 3339: <https://www.rfc-editor.org/rfc/rfc3339#section-5.6>. The civil-date arithmetic is
//! Howard Hinnant's `days_from_civil`
//! (<https://howardhinnant.github.io/date_algorithms.html#days_from_civil>).

use crate::event::Timestamp;

const NANOS_PER_SEC: u64 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

// === RFC 3339 ===

/// Parses an RFC 3339 date-time: `2016-10-06T00:17:09.669794202Z`.
///
/// Accepted, beyond the strict grammar, because application logs write them:
///
/// - a `T`, `t` or space between date and time (`2016-10-06 00:17:09.669Z`);
/// - a fraction of any length after `.` (or ISO 8601's `,`): digits beyond the ninth are
///   checked and dropped, not rounded;
/// - the offset as `Z`, `z`, `±hh:mm` or `±hhmm` (Java's `+0000`); the result is UTC, the
///   offset applied. `-00:00` reads as UTC.
///
/// Rejected (`None`): a missing offset (a zone-less local time is ambiguous; the caller keeps
/// the time it already has), anything before or after the date-time, out-of-range fields
/// (month 1–12, day within the month with Gregorian leap years, hour < 24, minute < 60,
/// offset hours < 24 and minutes < 60), and times before 1970-01-01T00:00:00Z.
///
/// Second 60 (a leap second) is accepted in any minute and read as second 59 with its
/// fraction kept: the time stays in its own minute (and day), at the cost of sorting before
/// the last part of second 59. Which minutes really had a leap second is not checked.
pub fn parse_rfc3339(v: &[u8]) -> Option<Timestamp> {
    let &[
        y3,
        y2,
        y1,
        y0,
        b'-',
        mo1,
        mo0,
        b'-',
        d1,
        d0,
        separator,
        h1,
        h0,
        b':',
        mi1,
        mi0,
        b':',
        s1,
        s0,
        ref rest @ ..,
    ] = v
    else {
        return None;
    };
    if !matches!(separator, b'T' | b't' | b' ') {
        return None;
    }
    let year = number(&[y3, y2, y1, y0])?;
    let month = number(&[mo1, mo0])?;
    let day = number(&[d1, d0])?;
    let hour = number(&[h1, h0])?;
    let minute = number(&[mi1, mi0])?;
    let second = number(&[s1, s0])?;
    let valid = (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day)
        && hour < 24
        && minute < 60
        && second <= 60;
    if !valid {
        return None;
    }
    let (nanos, rest) = fraction(rest)?;
    let offset = offset(rest)?;

    let second = second.min(59);
    let secs = days_from_civil(i64::from(year), month, day) * SECS_PER_DAY
        + i64::from(hour * 3600 + minute * 60 + second)
        - offset;
    (secs >= 0).then_some(Timestamp { secs, nanos })
}

/// The value of a run of ASCII digits, if every byte is one. Callers pass at most four.
fn number(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
    })
}

/// An optional `.fraction` (or `,fraction`): the nanoseconds and what follows it.
fn fraction(v: &[u8]) -> Option<(u32, &[u8])> {
    let Some((b'.' | b',', digits)) = v.split_first() else {
        return Some((0, v));
    };
    let len = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    if len == 0 {
        return None;
    }
    let mut nanos = 0u32;
    for i in 0..9 {
        let digit = digits[..len].get(i).map_or(0, |&d| u32::from(d - b'0'));
        nanos = nanos * 10 + digit;
    }
    Some((nanos, &digits[len..]))
}

/// The offset that must end the value, in seconds east of UTC.
fn offset(v: &[u8]) -> Option<i64> {
    let (sign, hour, minute) = match *v {
        [b'Z' | b'z'] => return Some(0),
        [sign, h1, h0, b':', m1, m0] | [sign, h1, h0, m1, m0] => {
            (sign, number(&[h1, h0])?, number(&[m1, m0])?)
        }
        _ => return None,
    };
    if hour >= 24 || minute >= 60 {
        return None;
    }
    let secs = i64::from(hour * 3600 + minute * 60);
    match sign {
        b'+' => Some(secs),
        b'-' => Some(-secs),
        _ => None,
    }
}

fn is_leap_year(year: u32) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

/// Days in `month` (1–12) of `year`.
fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (negative before it); `month`
/// 1–12, `day` 1–31. Howard Hinnant's `days_from_civil`: it counts in 400-year eras that start
/// on March 1st, so the leap day is the last day of its year and needs no special case.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400); // [0, 399]
    let month_from_march = i64::from((month + 9) % 12); // March 0 … February 11
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

// === epoch numbers ===

/// Units per second of an epoch count, from its magnitude: seconds below 1e11 (until the year
/// 5138), milliseconds below 1e14, microseconds below 1e17, nanoseconds from there on.
fn units_per_sec(whole: u64) -> u64 {
    match whole {
        0..100_000_000_000 => 1,
        100_000_000_000..100_000_000_000_000 => 1_000,
        100_000_000_000_000..100_000_000_000_000_000 => 1_000_000,
        _ => NANOS_PER_SEC,
    }
}

/// Builds the timestamp of `whole` units plus `frac_ns` nanoseconds (at most one unit).
fn from_units(whole: u64, per_sec: u64, frac_ns: u64) -> Timestamp {
    let ns_per_unit = NANOS_PER_SEC / per_sec;
    let nanos = (whole % per_sec) * ns_per_unit + frac_ns; // at most 1e9
    let secs = whole / per_sec + nanos / NANOS_PER_SEC;
    Timestamp {
        // Below 1e11 in every unit (2^64 ns is about 1.8e10 s): fits.
        secs: secs as i64,
        nanos: (nanos % NANOS_PER_SEC) as u32,
    }
}

/// An epoch time as an integer, its unit told by its magnitude: seconds (< 1e11),
/// milliseconds (< 1e14), microseconds (< 1e17), nanoseconds (otherwise). Negative: `None`.
///
/// 0 is the epoch itself; OTLP reads a zero time as "unknown", which is what a 0 in a log
/// usually means too.
pub fn from_epoch_int(v: i64) -> Option<Timestamp> {
    let v = u64::try_from(v).ok()?;
    Some(from_units(v, units_per_sec(v), 0))
}

/// An epoch time as a floating-point number (zap's `"ts":1700000000.123456`), its unit told by
/// its magnitude as in [`from_epoch_int`]. Negative, NaN, infinite or at least 2⁶⁴ units:
/// `None`.
///
/// A double holds about 16 significant digits, so `1700000000.123` is stored as
/// `1700000000.1229999065…`. The fraction is rounded to the finest power-of-ten of
/// nanoseconds the double can actually resolve at that magnitude (a microsecond for today's
/// times in seconds or milliseconds), which gives back the decimal digits that were written.
pub fn from_epoch_number(v: f64) -> Option<Timestamp> {
    // NaN fails the range test too.
    if !(0.0..18_446_744_073_709_551_616.0).contains(&v) {
        return None;
    }
    let whole = v.trunc();
    let frac = v - whole; // exact
    let whole = whole as u64; // in range: checked above
    let per_sec = units_per_sec(whole);
    let ns_per_unit = (NANOS_PER_SEC / per_sec) as f64;
    let quantum = quantum_ns(v, ns_per_unit);
    // At most one unit after rounding; `from_units` carries it.
    let frac_ns = ((frac * ns_per_unit / quantum).round() * quantum) as u64;
    Some(from_units(whole, per_sec, frac_ns))
}

/// The smallest power of ten of nanoseconds (1 ns … 1 s) at least as large as the gap between
/// `v` and the next double, in nanoseconds: finer digits of `v` are representation noise.
fn quantum_ns(v: f64, ns_per_unit: f64) -> f64 {
    // `v` is finite and non-negative, so the next bit pattern is the next larger double.
    // (`f64::next_up` is newer than our minimum Rust version.)
    let gap = f64::from_bits(v.to_bits() + 1) - v;
    let gap_ns = gap * ns_per_unit;
    let mut quantum = 1.0;
    while quantum < gap_ns && quantum < 1e9 {
        quantum *= 10.0;
    }
    quantum
}

/// An epoch time written as text: ASCII digits with an optional `.` and fraction digits
/// (`"1700000000"`, `"1700000000.123"`, `"1700000000123"`). The unit comes from the integer
/// part's magnitude as in [`from_epoch_int`]; fraction digits finer than a nanosecond are
/// dropped, not rounded.
///
/// `None` for anything else: signs, exponents, whitespace, an empty integer or fraction part
/// (`".5"`, `"5."`), or an integer part of 2⁶⁴ or more.
pub fn from_epoch_text(v: &[u8]) -> Option<Timestamp> {
    let (int, frac) = match memchr::memchr(b'.', v) {
        Some(dot) => (&v[..dot], Some(&v[dot + 1..])),
        None => (v, None),
    };
    if int.is_empty() {
        return None;
    }
    let whole = int.iter().try_fold(0u64, |n, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })?;
    let per_sec = units_per_sec(whole);
    let frac_ns = match frac {
        None => 0,
        Some([]) => return None,
        Some(digits) => {
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            // As many digits as a unit has nanosecond decimals: 9 for seconds, 0 for ns.
            let mut places = NANOS_PER_SEC / per_sec;
            let mut ns = 0;
            for &d in digits {
                places /= 10;
                if places == 0 {
                    break;
                }
                ns += u64::from(d - b'0') * places;
            }
            ns
        }
    };
    Some(from_units(whole, per_sec, frac_ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64, nanos: u32) -> Option<Timestamp> {
        Some(Timestamp { secs, nanos })
    }

    fn parse(v: &str) -> Option<Timestamp> {
        parse_rfc3339(v.as_bytes())
    }

    #[test]
    fn known_times() {
        assert_eq!(parse("1970-01-01T00:00:00Z"), ts(0, 0));
        assert_eq!(parse("2015-09-07T01:23:04Z"), ts(1_441_588_984, 0));
        assert_eq!(parse("2000-02-29T00:00:00Z"), ts(951_782_400, 0));
        assert_eq!(parse("2023-11-14T22:13:20Z"), ts(1_700_000_000, 0));
        assert_eq!(
            parse("2016-10-06T00:17:09.669794202Z"),
            ts(1_475_713_029, 669_794_202)
        );
        assert_eq!(parse("9999-12-31T23:59:59Z"), ts(253_402_300_799, 0));
        assert_eq!(
            parse("9999-12-31T23:59:59.999999999Z"),
            ts(253_402_300_799, 999_999_999)
        );
    }

    #[test]
    fn separators_and_case() {
        let want = ts(1_475_713_029, 669_000_000);
        for v in [
            "2016-10-06T00:17:09.669Z",
            "2016-10-06t00:17:09.669z",
            "2016-10-06 00:17:09.669Z",
            "2016-10-06 00:17:09,669Z",
            "2016-10-06T00:17:09.669+00:00",
            "2016-10-06T00:17:09.669-00:00",
            "2016-10-06T00:17:09.669+0000",
        ] {
            assert_eq!(parse(v), want, "{v}");
        }
    }

    #[test]
    fn offsets_are_applied() {
        let want = ts(1_475_713_029, 0); // 2016-10-06T00:17:09Z
        for v in [
            "2016-10-06T02:17:09+02:00",
            "2016-10-06T02:17:09+0200",
            "2016-10-05T19:47:09-04:30",
            "2016-10-06T05:47:09+05:30",
            "2016-10-05T00:18:09-23:59",
            "2016-10-06T23:59:09+23:42",
        ] {
            assert_eq!(parse(v), want, "{v}");
        }
        // Crossing a year and a leap day.
        assert_eq!(
            parse("2000-03-01T00:30:00+01:00"),
            parse("2000-02-29T23:30:00Z")
        );
        assert_eq!(
            parse("2016-12-31T23:00:00-01:00"),
            parse("2017-01-01T00:00:00Z")
        );
    }

    #[test]
    fn fraction_lengths() {
        let cases: &[(&str, u32)] = &[
            ("", 0),
            (".0", 0),
            (".6", 600_000_000),
            (".66", 660_000_000),
            (".669", 669_000_000),
            (".6697", 669_700_000),
            (".669794", 669_794_000),
            (".66979420", 669_794_200),
            (".669794202", 669_794_202),
            (".6697942029", 669_794_202),
            (".669794202999999999999", 669_794_202),
            (".000000001", 1),
            (".999999999", 999_999_999),
        ];
        for &(frac, nanos) in cases {
            let v = format!("2016-10-06T00:17:09{frac}Z");
            assert_eq!(parse(&v), ts(1_475_713_029, nanos), "{v}");
        }
        for bad in [".", ".Z", ".12a", ".1.2", "..1", ". 1"] {
            let v = format!("2016-10-06T00:17:09{bad}Z");
            assert_eq!(parse(&v), None, "{v}");
        }
    }

    #[test]
    fn leap_second_reads_as_59() {
        assert_eq!(parse("1972-06-30T23:59:60Z"), ts(78_796_799, 0));
        assert_eq!(
            parse("2016-12-31T23:59:60.5Z"),
            ts(1_483_228_799, 500_000_000)
        );
        assert_eq!(parse("2016-12-31T23:59:61Z"), None);
    }

    #[test]
    fn invalid_dates_and_times() {
        for v in [
            "2023-02-29T00:00:00Z", // not a leap year
            "1900-02-29T00:00:00Z", // century, not a leap year
            "2016-02-30T00:00:00Z",
            "2016-04-31T00:00:00Z",
            "2016-13-01T00:00:00Z",
            "2016-00-01T00:00:00Z",
            "2016-01-00T00:00:00Z",
            "2016-01-32T00:00:00Z",
            "2016-01-01T24:00:00Z",
            "2016-01-01T23:60:00Z",
            "2016-01-01T23:00:99Z",
            "2016-01-01T00:00:00+24:00",
            "2016-01-01T00:00:00+01:60",
            "2016-01-01T00:00:00+01",
            "2016-01-01T00:00:00+1:00",
            "2016-01-01T00:00:00*01:00",
            "2016-01-01T00:00:00",     // no offset
            "2016-01-01T00:00:00.123", // no offset
            "2016-01-01T00:00:00ZZ",   // trailing bytes
            "2016-01-01T00:00:00Z ",   // trailing bytes
            " 2016-01-01T00:00:00Z",   // leading bytes
            "2016-01-01X00:00:00Z",    // separator
            "2016-01-01T00-00-00Z",    // time separators
            "2016/01/01T00:00:00Z",    // date separators
            "16-01-01T00:00:00Z",      // two-digit year
            "+2016-01-01T00:00:00Z",   // signed year
            "2016-1-01T00:00:00Z",     // one-digit month
            "2016-01-01T0:00:00Z",     // one-digit hour
            "2016-01-01T00:00Z",       // no seconds
            "2016-01-01",              // date only
            "２０16-01-01T00:00:00Z",  // non-ASCII digits
            "",
        ] {
            assert_eq!(parse(v), None, "{v:?}");
        }
    }

    #[test]
    fn before_the_epoch_is_none() {
        assert_eq!(parse("0001-01-01T00:00:00Z"), None); // Go's zero time
        assert_eq!(parse("0000-01-01T00:00:00Z"), None);
        assert_eq!(parse("1969-12-31T23:59:59.999999999Z"), None);
        assert_eq!(parse("1970-01-01T00:59:59+01:00"), None);
        assert_eq!(parse("1970-01-01T01:00:00+01:00"), ts(0, 0));
        assert_eq!(parse("1969-12-31T23:00:00-01:00"), ts(0, 0));
    }

    #[test]
    fn every_prefix_is_handled() {
        let v = b"2016-10-06T00:17:09.669794202+05:30";
        for end in 0..v.len() {
            assert_eq!(parse_rfc3339(&v[..end]), None, "{end}");
        }
        assert!(parse_rfc3339(v).is_some());
        let mut noise = *v;
        for i in 0..noise.len() {
            for b in [0u8, b'9', b':', 0xff] {
                let keep = noise[i];
                noise[i] = b;
                let _ = parse_rfc3339(&noise);
                noise[i] = keep;
            }
        }
    }

    /// Walks the calendar day by day from 1970 to 9999 with a naive counter and checks
    /// `days_from_civil` (and the month lengths) against it.
    #[test]
    fn days_from_civil_matches_a_day_counter() {
        let mut days = 0i64;
        for year in 1970..=9999u32 {
            for month in 1..=12 {
                for day in 1..=days_in_month(year, month) {
                    assert_eq!(
                        days_from_civil(i64::from(year), month, day),
                        days,
                        "{year}-{month}-{day}"
                    );
                    days += 1;
                }
            }
        }
        assert_eq!(days, 2_932_897); // 1970-01-01 to 10000-01-01
        assert_eq!(days_from_civil(0, 3, 1), -719_468);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert!(is_leap_year(2000) && is_leap_year(2024) && is_leap_year(2400));
        assert!(!is_leap_year(1900) && !is_leap_year(2023) && !is_leap_year(2100));
    }

    #[test]
    fn epoch_int_units() {
        assert_eq!(from_epoch_int(0), ts(0, 0));
        assert_eq!(from_epoch_int(1_441_588_984), ts(1_441_588_984, 0));
        assert_eq!(from_epoch_int(951_782_400), ts(951_782_400, 0));
        assert_eq!(
            from_epoch_int(1_700_000_000_123),
            ts(1_700_000_000, 123_000_000)
        );
        assert_eq!(
            from_epoch_int(1_700_000_000_123_456),
            ts(1_700_000_000, 123_456_000)
        );
        assert_eq!(
            from_epoch_int(1_700_000_000_123_456_789),
            ts(1_700_000_000, 123_456_789)
        );
        // Unit boundaries.
        assert_eq!(from_epoch_int(99_999_999_999), ts(99_999_999_999, 0));
        assert_eq!(from_epoch_int(100_000_000_000), ts(100_000_000, 0));
        assert_eq!(
            from_epoch_int(99_999_999_999_999),
            ts(99_999_999_999, 999_000_000)
        );
        assert_eq!(from_epoch_int(100_000_000_000_000), ts(100_000_000, 0));
        assert_eq!(
            from_epoch_int(99_999_999_999_999_999),
            ts(99_999_999_999, 999_999_000)
        );
        assert_eq!(from_epoch_int(100_000_000_000_000_000), ts(100_000_000, 0));
        assert_eq!(from_epoch_int(i64::MAX), ts(9_223_372_036, 854_775_807));
        assert_eq!(from_epoch_int(-1), None);
        assert_eq!(from_epoch_int(i64::MIN), None);
    }

    #[test]
    fn epoch_number_units() {
        assert_eq!(from_epoch_number(0.0), ts(0, 0));
        assert_eq!(from_epoch_number(-0.0), ts(0, 0));
        assert_eq!(from_epoch_number(1_441_588_984.0), ts(1_441_588_984, 0));
        assert_eq!(from_epoch_number(1.5), ts(1, 500_000_000));
        assert_eq!(
            from_epoch_number(1_700_000_000.123),
            ts(1_700_000_000, 123_000_000)
        );
        assert_eq!(
            from_epoch_number(1_700_000_000.123456),
            ts(1_700_000_000, 123_456_000)
        );
        assert_eq!(
            from_epoch_number(1_700_000_000.999_999_9),
            ts(1_700_000_001, 0)
        );
        assert_eq!(
            from_epoch_number(1_700_000_000_123.0),
            ts(1_700_000_000, 123_000_000)
        );
        assert_eq!(
            from_epoch_number(1_700_000_000_123.456),
            ts(1_700_000_000, 123_456_000)
        );
        assert_eq!(
            from_epoch_number(1_700_000_000_123_456.0),
            ts(1_700_000_000, 123_456_000)
        );
        // A double cannot hold every nanosecond here; it holds this multiple of 256.
        assert_eq!(
            from_epoch_number(1_700_000_000_123_456_768.0),
            ts(1_700_000_000, 123_456_768)
        );
        for bad in [
            -1.0,
            -0.5,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e20,
            1e300,
        ] {
            assert_eq!(from_epoch_number(bad), None, "{bad}");
        }
        assert!(from_epoch_number(18_446_744_073_709_549_568.0).is_some());
    }

    #[test]
    fn epoch_number_agrees_with_text_for_written_decimals() {
        for secs in [0u64, 1, 86_399, 951_782_400, 1_441_588_984, 1_700_000_000] {
            for micros in [0u64, 1, 999, 123_456, 500_000, 999_999] {
                let text = format!("{secs}.{micros:06}");
                let number: f64 = text.parse().unwrap();
                assert_eq!(
                    from_epoch_number(number),
                    from_epoch_text(text.as_bytes()),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn epoch_text_units() {
        let cases: &[(&str, i64, u32)] = &[
            ("0", 0, 0),
            ("1441588984", 1_441_588_984, 0),
            ("1700000000.123", 1_700_000_000, 123_000_000),
            ("1700000000.123456789", 1_700_000_000, 123_456_789),
            ("1700000000.1234567891", 1_700_000_000, 123_456_789),
            ("1700000000123", 1_700_000_000, 123_000_000),
            ("1700000000123.456", 1_700_000_000, 123_456_000),
            ("1700000000123.4567", 1_700_000_000, 123_456_700),
            ("1700000000123456", 1_700_000_000, 123_456_000),
            ("1700000000123456.789", 1_700_000_000, 123_456_789),
            ("1700000000123456789", 1_700_000_000, 123_456_789),
            ("1700000000123456789.9", 1_700_000_000, 123_456_789),
            ("18446744073709551615", 18_446_744_073, 709_551_615),
        ];
        for &(text, secs, nanos) in cases {
            assert_eq!(from_epoch_text(text.as_bytes()), ts(secs, nanos), "{text}");
        }
        for bad in [
            "",
            ".",
            "1.",
            ".5",
            "-1",
            "+1",
            "1e9",
            "1.5e3",
            "17a",
            "1.2.3",
            " 1",
            "1 ",
            "1_000",
            "18446744073709551616",
            "99999999999999999999999",
        ] {
            assert_eq!(from_epoch_text(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn epoch_round_trips_through_rfc3339() {
        for (text, secs) in [
            ("2015-09-07T01:23:04Z", 1_441_588_984),
            ("2000-02-29T00:00:00Z", 951_782_400),
        ] {
            assert_eq!(parse(text), from_epoch_int(secs), "{text}");
            assert_eq!(parse(text), from_epoch_int(secs * 1000), "{text}");
            assert_eq!(parse(text), from_epoch_number(secs as f64), "{text}");
            assert_eq!(
                parse(text),
                from_epoch_text(secs.to_string().as_bytes()),
                "{text}"
            );
        }
    }
}
