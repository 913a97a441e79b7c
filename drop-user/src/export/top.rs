//! `dropscope top`: a full-screen live view of the same reports `watch`
//! prints. The terminal runs on its own thread: the sampler hands it each
//! report through a channel and never waits on the screen or the keyboard.
//!
//! Keys: q/Esc quit, p or space pause, s cycle the sort (rate, total,
//! reason), c cycle a category filter, i cycle an interface filter.
//!
//! History (history.rs): a drops/s chart of the top rows over the last
//! minutes, a sparkline per row and per attack.

mod history;

use std::{
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use ratatui::{
    Frame,
    crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    symbols::Marker,
    text::{Line, Span},
    widgets::{Axis, Block, Borders, Chart, Dataset, GraphType, Paragraph, Row, Table},
};

use self::history::History;
use crate::{
    report::{DropRow, Report},
    units::human,
};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Sort {
    Rate,
    Total,
    Reason,
}

struct View {
    latest: Option<Box<Report>>,
    shown: Option<Box<Report>>,
    paused: bool,
    sort: Sort,
    category: Option<String>,
    iface: Option<String>,
    /// The reports shown so far (a paused screen records nothing).
    history: History,
}

impl View {
    fn show(&mut self, r: Box<Report>) {
        self.history.push(&r);
        self.shown = Some(r);
    }
}

/// Starts the screen thread. Reports go in through the returned sender;
/// `quit` fires when the user presses q. Join the handle before exiting so
/// the terminal is restored.
pub(crate) fn spawn(
    quit: tokio::sync::mpsc::UnboundedSender<()>,
) -> std::io::Result<(mpsc::Sender<Box<Report>>, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<Box<Report>>();
    let mut terminal = ratatui::try_init()?;
    let handle = std::thread::Builder::new()
        .name("dropscope-top".into())
        .spawn(move || {
            let mut view = View {
                latest: None,
                shown: None,
                paused: false,
                sort: Sort::Rate,
                category: None,
                iface: None,
                history: History::new(),
            };
            let mut last_draw = Instant::now() - Duration::from_secs(1);
            'outer: loop {
                let mut dirty = false;
                loop {
                    match rx.try_recv() {
                        Ok(r) => {
                            view.latest = Some(r);
                            dirty = true;
                        }
                        Err(mpsc::TryRecvError::Empty) => break,
                        Err(mpsc::TryRecvError::Disconnected) => break 'outer,
                    }
                }
                if !view.paused
                    && dirty
                    && let Some(r) = view.latest.take()
                {
                    view.show(r);
                }
                if event::poll(Duration::from_millis(100)).unwrap_or(false)
                    && let Ok(Event::Key(k)) = event::read()
                {
                    if k.kind != KeyEventKind::Press {
                        continue;
                    }
                    match k.code {
                        KeyCode::Char('q') | KeyCode::Esc => break,
                        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                            break;
                        }
                        KeyCode::Char('p') | KeyCode::Char(' ') => {
                            view.paused = !view.paused;
                            if !view.paused
                                && let Some(r) = view.latest.take()
                            {
                                view.show(r);
                            }
                        }
                        KeyCode::Char('s') => {
                            view.sort = match view.sort {
                                Sort::Rate => Sort::Total,
                                Sort::Total => Sort::Reason,
                                Sort::Reason => Sort::Rate,
                            }
                        }
                        KeyCode::Char('c') => {
                            let cats = view.values(|r| {
                                r.drops.iter().map(|d| d.category.to_string()).collect()
                            });
                            view.category = cycle(&cats, view.category.take());
                        }
                        KeyCode::Char('i') => {
                            // Watched interfaces first, then the rest.
                            let mut ifs: Vec<String> = view
                                .shown
                                .as_deref()
                                .map(|r| r.interfaces.iter().map(|i| i.iface.clone()).collect())
                                .unwrap_or_default();
                            for other in
                                view.values(|r| r.drops.iter().map(|d| d.iface.clone()).collect())
                            {
                                if !ifs.contains(&other) {
                                    ifs.push(other);
                                }
                            }
                            view.iface = cycle(&ifs, view.iface.take());
                        }
                        _ => {}
                    }
                    last_draw = Instant::now() - Duration::from_secs(1);
                }
                if dirty || last_draw.elapsed() >= Duration::from_millis(500) {
                    let _ = terminal.draw(|f| draw(f, &view));
                    last_draw = Instant::now();
                }
            }
            ratatui::restore();
            let _ = quit.send(());
        })?;
    Ok((tx, handle))
}

impl View {
    fn values(&self, f: impl Fn(&Report) -> Vec<String>) -> Vec<String> {
        let mut v = self.shown.as_deref().map(f).unwrap_or_default();
        v.sort();
        v.dedup();
        v.retain(|s| !s.is_empty());
        v
    }
}

/// None -> first -> ... -> last -> None.
fn cycle(values: &[String], cur: Option<String>) -> Option<String> {
    match cur {
        None => values.first().cloned(),
        Some(c) => {
            let i = values.iter().position(|v| *v == c);
            i.and_then(|i| values.get(i + 1).cloned())
        }
    }
}

fn pane(title: String) -> Block<'static> {
    Block::default()
        .borders(Borders::TOP)
        .title(title)
        .title_style(Style::default().add_modifier(Modifier::BOLD))
}

fn draw(f: &mut Frame, v: &View) {
    let area = f.area();
    // 80x24 keeps every pane: smaller chart and lists; a tall screen
    // gives the chart and the table the room.
    let small = area.height < 34;
    let [head, drops, chart, mid, bottom, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(5),
        Constraint::Length(if small {
            6
        } else {
            (area.height * 2 / 5).min(40)
        }),
        Constraint::Length(if small { 5 } else { 6 }),
        Constraint::Length(if small { 5 } else { 7 }),
        Constraint::Length(1),
    ])
    .areas(area);
    let Some(r) = v.shown.as_deref() else {
        f.render_widget(
            Paragraph::new("dropscope top: waiting for the first sample..."),
            head,
        );
        f.render_widget(Paragraph::new("q quit"), keys);
        return;
    };
    let ifaces: Vec<&str> = r.interfaces.iter().map(|i| i.iface.as_str()).collect();
    f.render_widget(
        Paragraph::new(format!(
            "dropscope top  {}  drops {}/s  total {}  {}",
            if ifaces.is_empty() {
                "-".to_string()
            } else {
                ifaces.join(",")
            },
            human(r.drops_delta as f64 / r.interval_s.max(1e-3)),
            r.drops_total,
            if v.paused { "[PAUSED]" } else { "" }
        ))
        .style(Style::default().add_modifier(Modifier::REVERSED)),
        head,
    );
    let rows = visible_rows(r, v);
    draw_drops(f, drops, &rows, v);
    draw_chart(f, chart, &rows, v);
    let [nic, attacks] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(mid);
    draw_nic(f, nic, r, v);
    draw_attacks(f, attacks, r, v);
    let [sources, ports] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(bottom);
    draw_sources(f, sources, r, v);
    draw_ports(f, ports, r, v);
    f.render_widget(
        Paragraph::new(format!(
            "q quit  p pause  s sort:{:?}  c category:{}  i iface:{}",
            v.sort,
            v.category.as_deref().unwrap_or("all"),
            v.iface.as_deref().unwrap_or("all")
        )),
        keys,
    );
}

/// The drop rows the filters let through, in the chosen order.
fn visible_rows<'a>(r: &'a Report, v: &View) -> Vec<&'a DropRow> {
    let mut rows: Vec<_> = r
        .drops
        .iter()
        .filter(|d| {
            v.category
                .as_deref()
                .is_none_or(|c| c == d.category.as_str())
        })
        .filter(|d| v.iface.as_deref().is_none_or(|i| i == d.iface))
        .collect();
    match v.sort {
        Sort::Rate => rows.sort_by(|a, b| b.rate.total_cmp(&a.rate).then(b.total.cmp(&a.total))),
        Sort::Total => rows.sort_by_key(|r| std::cmp::Reverse(r.total)),
        Sort::Reason => rows.sort_by(|a, b| a.reason.cmp(&b.reason).then(a.iface.cmp(&b.iface))),
    }
    rows
}

const SPARK: usize = 12;

fn draw_drops(f: &mut Frame, area: Rect, rows: &[&DropRow], v: &View) {
    let sum: f64 = rows.iter().map(|d| d.rate).sum::<f64>().max(1e-9);
    let body: Vec<Row> = rows
        .iter()
        .map(|d| {
            Row::new(vec![
                d.label(),
                d.iface.clone(),
                human(d.rate),
                d.total.to_string(),
                d.category.to_string(),
                format!("{:.0}%", 100.0 * d.rate / sum),
                v.history.row_spark(&(d.label(), d.iface.clone()), SPARK),
            ])
        })
        .collect();
    let n = body.len();
    let t = Table::new(
        body,
        [
            Constraint::Min(18),
            Constraint::Length(12),
            Constraint::Length(8),
            Constraint::Length(10),
            Constraint::Length(13),
            Constraint::Length(5),
            Constraint::Length(SPARK as u16),
        ],
    )
    .header(
        Row::new(vec![
            "REASON", "IFACE", "RATE/s", "TOTAL", "CATEGORY", "SHARE", "HISTORY",
        ])
        .style(Style::default().add_modifier(Modifier::BOLD)),
    )
    .block(pane(format!("Drops by reason ({n})")));
    f.render_widget(t, area);
}

fn draw_nic(f: &mut Frame, area: Rect, r: &Report, v: &View) {
    let mut rows: Vec<_> = r
        .counters
        .iter()
        .filter(|c| c.total > 0 || c.delta > 0)
        .filter(|c| {
            v.iface
                .as_deref()
                .is_none_or(|i| i == c.iface || c.iface == "softnet")
        })
        .collect();
    rows.sort_by(|a, b| b.delta.cmp(&a.delta).then(b.total.cmp(&a.total)));
    let secs = r.interval_s.max(1e-3);
    let lines: Vec<Line> = if rows.is_empty() {
        vec![Line::from("no NIC or backlog loss")]
    } else {
        rows.iter()
            .map(|c| {
                Line::from(format!(
                    "{:<8} {:<18} {:>7}/s {:>8}",
                    trunc(&c.iface, 8),
                    trunc(&c.counter, 18),
                    human(c.delta as f64 / secs),
                    c.total
                ))
            })
            .collect()
    };
    f.render_widget(
        Paragraph::new(lines).block(pane("NIC counters".into())),
        area,
    );
}

/// Drops/s of the top rows (as sorted and filtered) over the window. The
/// legend line names each series with its newest point.
fn draw_chart(f: &mut Frame, area: Rect, rows: &[&DropRow], v: &View) {
    const COLORS: [Color; 4] = [Color::Red, Color::Yellow, Color::Cyan, Color::Magenta];
    let block = pane(format!(
        "Drops/s, last {}s",
        v.history.span().round().max(1.0)
    ));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let [legend, plot] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(inner);
    let series: Vec<(String, Vec<(f64, f64)>)> = rows
        .iter()
        .map(|d| {
            let points = v.history.row_points(&(d.label(), d.iface.clone()));
            (format!("{} {}", d.label(), d.iface), points)
        })
        .filter(|(_, p)| !p.is_empty())
        .take(COLORS.len())
        .collect();
    if series.is_empty() {
        f.render_widget(Paragraph::new("no drops in the window"), legend);
        return;
    }
    let mut spans = Vec::new();
    for (i, (name, points)) in series.iter().enumerate() {
        let last = points.last().map(|p| p.1).unwrap_or(0.0);
        spans.push(Span::styled("■ ", Style::default().fg(COLORS[i])));
        spans.push(Span::raw(format!("{name} {}/s  ", human(last))));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), legend);
    let max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.1))
        .fold(0.0, f64::max)
        .max(1.0);
    let span = v.history.span().max(1.0);
    let datasets: Vec<Dataset> = series
        .iter()
        .enumerate()
        .map(|(i, (_, points))| {
            Dataset::default()
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::default().fg(COLORS[i]))
                .data(points)
        })
        .collect();
    let chart = Chart::new(datasets)
        .x_axis(
            Axis::default()
                .bounds([-span, 0.0])
                .labels([format!("-{span:.0}s"), "now".to_string()]),
        )
        .y_axis(
            Axis::default()
                .bounds([0.0, max * 1.1])
                .labels(["0".to_string(), human(max)]),
        );
    f.render_widget(chart, plot);
}

fn draw_attacks(f: &mut Frame, area: Rect, r: &Report, v: &View) {
    let lines: Vec<Line> = if r.attacks.is_empty() {
        vec![Line::from("none")]
    } else {
        r.attacks
            .iter()
            .map(|a| {
                Line::from(format!(
                    "#{} {} {} {}% {}pps {} src {}",
                    a.id,
                    a.class,
                    a.iface,
                    a.confidence,
                    human(a.pps),
                    a.sources,
                    v.history.attack_spark(a.id, SPARK).trim_end()
                ))
            })
            .collect()
    };
    f.render_widget(
        Paragraph::new(lines).block(pane(format!("Attacks ({})", r.attacks.len()))),
        area,
    );
}

fn draw_sources(f: &mut Frame, area: Rect, r: &Report, v: &View) {
    let lines: Vec<Line> = r
        .top_sources
        .iter()
        .filter(|s| v.iface.as_deref().is_none_or(|i| i == s.iface))
        .map(|s| {
            Line::from(format!(
                "{:<22} {:>7}pps {:>7}bps",
                trunc(&s.address, 22),
                human(s.pps),
                human(s.bps)
            ))
        })
        .collect();
    let title = match &r.sources_estimate {
        Some(e) => format!("Top sources (~{} distinct)", human(e.distinct_sources)),
        None => "Top sources".into(),
    };
    f.render_widget(Paragraph::new(lines).block(pane(title)), area);
}

fn draw_ports(f: &mut Frame, area: Rect, r: &Report, v: &View) {
    let lines: Vec<Line> = r
        .top_ports
        .iter()
        .filter(|p| v.iface.as_deref().is_none_or(|i| i == p.iface))
        .map(|p| {
            Line::from(format!(
                "{}/{:<6} {:<8} {:>8}pps",
                p.proto,
                p.port,
                trunc(&p.iface, 8),
                human(p.pps)
            ))
        })
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(pane("Top destination ports".into())),
        area,
    );
}

fn trunc(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n.saturating_sub(1)).chain(['~']).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_cycle_through_values_and_back_to_all() {
        let v = vec!["a".to_string(), "b".to_string()];
        assert_eq!(cycle(&v, None).as_deref(), Some("a"));
        assert_eq!(cycle(&v, Some("a".into())).as_deref(), Some("b"));
        assert_eq!(cycle(&v, Some("b".into())), None);
        assert_eq!(cycle(&[], None), None);
    }
}
