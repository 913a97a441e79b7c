//! dropscope's JSON output as types, for programs that read it (this
//! project's tests among them): every line `watch --format json` prints is
//! a [`Report`] (`dropscope.watch/1`) or an [`AttackEvent`]
//! (`dropscope.attack/1`); `doctor --format json` prints a [`Diagnosis`]
//! (`dropscope.doctor/1`). The same structs write the output, so what
//! parses here is what dropscope wrote.

pub use crate::{
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
        AttackClass, Cause, L4, LossKind, PatternVerdict, Phase, QueueDrop, Severity, SourceSpread,
        SpoofVerdict, XdpMode,
    },
};

/// One line of `watch --format json`.
#[derive(Debug, Clone)]
pub enum Line {
    Watch(Box<Report>),
    Attack(Box<AttackEvent>),
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
            crate::report::SCHEMA => {
                let mut r: Report = serde_json::from_value(v).map_err(bad)?;
                r.schema = crate::report::SCHEMA;
                Ok(Line::Watch(Box::new(r)))
            }
            crate::analysis::detect::EVENT_SCHEMA => {
                let mut a: AttackEvent = serde_json::from_value(v).map_err(bad)?;
                a.schema = crate::analysis::detect::EVENT_SCHEMA;
                Ok(Line::Attack(Box::new(a)))
            }
            _ => Err(format!("unknown schema {schema:?}: {line}")),
        }
    }

    pub fn watch(&self) -> Option<&Report> {
        match self {
            Line::Watch(r) => Some(r),
            Line::Attack(_) => None,
        }
    }

    pub fn attack(&self) -> Option<&AttackEvent> {
        match self {
            Line::Attack(a) => Some(a),
            Line::Watch(_) => None,
        }
    }
}

/// Parses `doctor --format json`'s output.
pub fn parse_diagnosis(text: &str) -> Result<Diagnosis, String> {
    let mut d: Diagnosis = serde_json::from_str(text.trim())
        .map_err(|e| format!("not a dropscope.doctor/1 document ({e})"))?;
    d.schema = crate::analysis::doctor::SCHEMA;
    d.report.schema = crate::report::SCHEMA;
    Ok(d)
}
