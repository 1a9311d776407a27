//! Twilio's error codes, in one table: what each means for the message, the contact and the
//! sender. Used for the answer to a send and for the `ErrorCode` of a status callback alike.

/// What a Twilio error code says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeClass {
    /// The number cannot receive texts (invalid, landline, unreachable, unknown or blocked
    /// destination): the message fails and the contact's phone is marked unreachable.
    Unreachable,
    /// The recipient replied STOP at the carrier: the message fails, the contact is opted out.
    OptedOut,
    /// A carrier filtered the text as spam or unwanted content: the message fails, `filtered`.
    Filtered,
    /// The operator has something to fix (credentials, a region not enabled, a sender that
    /// cannot send): no retry helps this message by itself.
    Operator,
    /// Twilio or a carrier is busy, queueing or briefly unable: worth another try.
    Transient,
    /// A code this table does not name: the HTTP status decides.
    Other,
}

/// Twilio refused the account's credentials: no sender of the account can send.
pub const BAD_CREDENTIALS: u32 = 20003;

/// Each code Herald treats specially, with what it means at Twilio.
const TABLE: &[(u32, CodeClass)] = &[
    (21211, CodeClass::Unreachable), // invalid 'To' phone number
    (21612, CodeClass::Unreachable), // the 'To' number is not reachable this way
    (21614, CodeClass::Unreachable), // 'To' is not a mobile number
    (21635, CodeClass::Unreachable), // 'To' cannot be reached (landline or unreachable carrier)
    (30005, CodeClass::Unreachable), // unknown destination handset
    (30006, CodeClass::Unreachable), // landline or unreachable carrier
    (21610, CodeClass::OptedOut),    // the recipient unsubscribed (STOP)
    (30007, CodeClass::Filtered),    // message filtered by the carrier
    (20003, CodeClass::Operator),    // authentication failed
    (21408, CodeClass::Operator),    // permission to send to this region is not enabled
    (21606, CodeClass::Operator),    // the 'From' number cannot send this message
    (21659, CodeClass::Operator),    // the 'From' is not a Twilio number of the account
    (20429, CodeClass::Transient),   // too many requests
    (21611, CodeClass::Transient),   // the sender's queue of unsent messages is full
    (30001, CodeClass::Transient),   // queue overflow
    (30003, CodeClass::Transient),   // unreachable handset, for now (off, out of coverage)
    (30008, CodeClass::Transient),   // unknown error at the carrier
    (30500, CodeClass::Transient),   // carrier temporarily unavailable
];

/// The class of a Twilio error code.
pub fn class(code: u32) -> CodeClass {
    TABLE
        .iter()
        .find(|(c, _)| *c == code)
        .map_or(CodeClass::Other, |(_, class)| *class)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_code_is_in_the_table_once() {
        for (i, (code, _)) in TABLE.iter().enumerate() {
            assert!(
                TABLE[i + 1..].iter().all(|(other, _)| other != code),
                "{code} twice"
            );
        }
    }

    #[test]
    fn codes_fall_in_the_classes_the_contract_names() {
        for code in [21211, 21612, 21614, 21635, 30005, 30006] {
            assert_eq!(class(code), CodeClass::Unreachable, "{code}");
        }
        assert_eq!(class(21610), CodeClass::OptedOut);
        assert_eq!(class(30007), CodeClass::Filtered);
        for code in [20003, 21408, 21606, 21659] {
            assert_eq!(class(code), CodeClass::Operator, "{code}");
        }
        for code in [20429, 30001, 21611, 30003, 30008, 30500] {
            assert_eq!(class(code), CodeClass::Transient, "{code}");
        }
        assert_eq!(class(21214), CodeClass::Other);
    }
}
