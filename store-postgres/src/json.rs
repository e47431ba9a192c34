//! JSON payloads cross the wire as they are: `jsonb` in binary format is a version byte and the
//! JSON text, so the adapter sends and receives the text without building a `serde_json::Value`.

use std::error::Error;

use bytes::{BufMut, Bytes, BytesMut};
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

/// The binary format version of `jsonb`.
const JSONB_VERSION: u8 = 1;

/// JSON text, already validated by the caller, sent as `jsonb`.
#[derive(Debug)]
pub(crate) struct JsonText<'a>(pub(crate) &'a [u8]);

impl ToSql for JsonText<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        if *ty == Type::JSONB {
            out.put_u8(JSONB_VERSION);
        }
        out.put_slice(self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB || *ty == Type::JSON
    }

    to_sql_checked!();
}

/// JSON text received from a `jsonb` or `json` column.
#[derive(Debug)]
pub(crate) struct ReceivedJson(pub(crate) Bytes);

impl<'a> FromSql<'a> for ReceivedJson {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        let text = if *ty == Type::JSONB {
            match raw.split_first() {
                Some((&JSONB_VERSION, text)) => text,
                _ => return Err("unsupported jsonb binary format version".into()),
            }
        } else {
            raw
        };
        Ok(Self(Bytes::copy_from_slice(text)))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB || *ty == Type::JSON
    }
}
