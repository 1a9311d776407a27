//! The domain's enums as Postgres `text` columns, so row structs hold them typed: a status
//! or channel Postgres returns that Herald does not know is a decode error, not a string that
//! slips through.

use sqlx::{
    Decode, Encode, Postgres, Type,
    encode::IsNull,
    error::BoxDynError,
    postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef},
};

use crate::domain::{Channel, MessageStatus, Priority, SmsEncoding};

macro_rules! text_enum {
    ($t:ty, $what:literal) => {
        impl Type<Postgres> for $t {
            fn type_info() -> PgTypeInfo {
                <&str as Type<Postgres>>::type_info()
            }

            fn compatible(ty: &PgTypeInfo) -> bool {
                <&str as Type<Postgres>>::compatible(ty)
            }
        }

        impl<'r> Decode<'r, Postgres> for $t {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                let raw = <&str as Decode<Postgres>>::decode(value)?;
                <$t>::parse(raw).ok_or_else(|| format!("unknown {} `{raw}`", $what).into())
            }
        }

        impl Encode<'_, Postgres> for $t {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <&str as Encode<Postgres>>::encode(self.as_str(), buf)
            }
        }
    };
}

text_enum!(MessageStatus, "message status");
text_enum!(Channel, "channel");
text_enum!(SmsEncoding, "SMS encoding");
text_enum!(Priority, "priority");
