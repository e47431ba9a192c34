//! Money: positive amounts in integer minor units (cents), and currency codes.
//!
//! Floating point never touches money here: an [`Amount`] is a count of minor units, and every
//! sum a balance takes is checked, so an overflow is an error instead of a wrapped balance.
//!
//! ```
//! use banking::money::{Amount, Currency};
//!
//! let ten_euros = Amount::new(1_000)?;
//! assert_eq!(ten_euros.minor_units(), 1_000);
//! assert!(Amount::new(0).is_err());
//! assert_eq!("EUR".parse::<Currency>()?.as_str(), "EUR");
//! assert!("euro".parse::<Currency>().is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A positive amount of money in minor units, small enough that any balance can hold it
/// (`1 ..= i64::MAX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Amount(i64);

/// An amount that is zero, negative or too large.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an amount must be a positive whole number of minor units, at most {max}; got {0}", max = i64::MAX)]
pub struct InvalidAmount(pub i128);

impl Amount {
    /// `minor_units` as an amount, if it is positive and at most `i64::MAX`.
    pub fn new(minor_units: u64) -> Result<Self, InvalidAmount> {
        match i64::try_from(minor_units) {
            Ok(units) if units > 0 => Ok(Self(units)),
            _ => Err(InvalidAmount(i128::from(minor_units))),
        }
    }

    /// The amount in minor units.
    pub fn minor_units(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Amount {
    type Error = InvalidAmount;

    fn try_from(minor_units: i64) -> Result<Self, InvalidAmount> {
        if minor_units > 0 {
            Ok(Self(minor_units))
        } else {
            Err(InvalidAmount(i128::from(minor_units)))
        }
    }
}

impl From<Amount> for i64 {
    fn from(amount: Amount) -> Self {
        amount.0
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A currency: three upper-case ASCII letters, as in ISO 4217 (`EUR`, `USD`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

/// A currency code that is not three upper-case ASCII letters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a currency is three upper-case letters, such as EUR; got {0:?}")]
pub struct InvalidCurrency(pub String);

impl Currency {
    /// The code, such as `"EUR"`.
    pub fn as_str(&self) -> &str {
        // Only ASCII letters get in (see `from_str`), so the bytes are always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl FromStr for Currency {
    type Err = InvalidCurrency;

    fn from_str(code: &str) -> Result<Self, InvalidCurrency> {
        match code.as_bytes() {
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => Ok(Self([a, b, c])),
            _ => Err(InvalidCurrency(code.to_owned())),
        }
    }
}

impl TryFrom<String> for Currency {
    type Error = InvalidCurrency;

    fn try_from(code: String) -> Result<Self, InvalidCurrency> {
        code.parse()
    }
}

impl From<Currency> for String {
    fn from(currency: Currency) -> Self {
        currency.as_str().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_positive_and_fit_a_balance() {
        assert!(Amount::new(0).is_err());
        assert!(Amount::try_from(-1).is_err());
        assert!(Amount::new(u64::MAX).is_err());
        assert_eq!(
            Amount::new(i64::MAX as u64).map(Amount::minor_units),
            Ok(i64::MAX)
        );
        assert!(serde_json::from_str::<Amount>("-5").is_err());
        assert!(serde_json::from_str::<Amount>("0").is_err());
        assert_eq!(
            serde_json::from_str::<Amount>("5").ok(),
            Amount::new(5).ok()
        );
    }

    #[test]
    fn currencies_are_three_upper_case_letters() {
        for bad in ["", "EU", "EURO", "eur", "E1R", "ÉUR"] {
            assert!(bad.parse::<Currency>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            serde_json::to_string(&"USD".parse::<Currency>().ok()).ok(),
            Some("\"USD\"".to_owned())
        );
    }
}
