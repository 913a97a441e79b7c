//! dropscope's JSON output as types, for programs that read it (this
//! project's tests among them): every line `watch --format json` prints is
//! a [`Report`] (`dropscope.watch/1`) or an [`AttackEvent`]
//! (`dropscope.attack/1`); `doctor --format json` prints a [`Diagnosis`]
//! (`dropscope.doctor/1`); a `drop_rate` hook reads a [`DropRateEvent`] on
//! stdin, `blocks --format json` prints [`BlockRow`]s. The same structs
//! write the output, so what parses here is what dropscope wrote.

pub use crate::{
    act::{blocklist::BlockRow, hooks::DropRateEvent},
    analysis::{
        doctor::{AuditRow, Diagnosis, Finding, PatternRow, PlaceRow},
        patterns::Pattern,
    },
    report::{
        AttackEvent, CounterRow, DropPortRow, DropRow, DropSourceRow, Health, Hint, IfaceReport,
        LocationRow, LossVerdict, PortRate, PortRow, ProgramDropShare, ReasonCount, Report,
        ShapeCounts, SketchBound, SourceRow, SourceShare, SourcesEstimate, Spoofing, TopPort,
        Vector, VectorStart, VerdictCounts, XdpProgramRow,
    },
    sys::reasons::Category,
    taxonomy::{
        AttackClass, Cause, KernelTrigger, L4, LossKind, Metric, PatternVerdict, Phase, QueueDrop,
        Severity, SourceSpread, SpoofVerdict, Threshold, Trigger, XdpMode,
    },
};

/// One line of `watch --format json` (a report or an attack event), or
/// the one line of `doctor --format json`.
#[derive(Debug, Clone)]
pub enum Line {
    Watch(Box<Report>),
    Attack(Box<AttackEvent>),
    Doctor(Box<Diagnosis>),
}

impl Line {
    /// Parses a line by its `schema` field; an unknown schema or a line
    /// that does not match its schema's type is an error saying which.
    pub fn parse(line: &str) -> Result<Line, String> {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("not JSON ({e}): {line}"))?;
        let schema = v["schema"].as_str().unwrap_or_default().to_string();
        let bad = |e: serde_json::Error| format!("not a {schema} line ({e}): {line}");
        match schema.as_str() {
            crate::report::SCHEMA => Ok(Line::Watch(serde_json::from_value(v).map_err(bad)?)),
            crate::report::EVENT_SCHEMA => {
                Ok(Line::Attack(serde_json::from_value(v).map_err(bad)?))
            }
            crate::analysis::doctor::SCHEMA => Ok(Line::Doctor(Box::new(parse_diagnosis(line)?))),
            _ => Err(format!("unknown schema {schema:?}: {line}")),
        }
    }

    pub fn watch(&self) -> Option<&Report> {
        match self {
            Line::Watch(r) => Some(r),
            _ => None,
        }
    }

    pub fn attack(&self) -> Option<&AttackEvent> {
        match self {
            Line::Attack(a) => Some(a),
            _ => None,
        }
    }

    pub fn doctor(&self) -> Option<&Diagnosis> {
        match self {
            Line::Doctor(d) => Some(d),
            _ => None,
        }
    }
}

/// Parses `doctor --format json`'s output.
pub fn parse_diagnosis(text: &str) -> Result<Diagnosis, String> {
    serde_json::from_str(text.trim())
        .map_err(|e| format!("not a dropscope.doctor/1 document ({e})"))
}
