//! What a report means: attack detection and classes, the loss verdict,
//! live hints, drop patterns, and the doctor's diagnosis.

pub(crate) mod detect;
pub(crate) mod doctor;
pub(crate) mod patterns;
