//! An API answer as the handlers build it, and the error bodies of the
//! trading and data APIs (which differ, as the real ones do).

use super::*;

/// A response in the making: status, JSON body, and whether it may be corrupted.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) body: Value,
}

pub(super) fn trading_error(status: StatusCode, code: u32, message: impl Into<String>) -> Answer {
    Answer {
        status,
        body: json!({"code": code, "message": message.into()}),
    }
}

pub(super) fn data_error(status: StatusCode, message: impl Into<String>) -> Answer {
    Answer {
        status,
        body: json!({"message": message.into()}),
    }
}

pub(super) fn html(status: StatusCode) -> Response {
    let reason = status.canonical_reason().unwrap_or("Error");
    let page = format!(
        "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n</body>\r\n</html>\r\n",
        code = status.as_u16()
    );
    (status, [("content-type", "text/html")], page).into_response()
}
