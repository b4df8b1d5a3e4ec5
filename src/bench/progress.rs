//! Progress over a run's grid on stderr: a bar with ETA when stderr is a terminal, one
//! plain line per shape otherwise (logs and CI keep a readable record). Rows printed while
//! the bar is drawn go through `suspend`, so the bar never splits a row.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::plan::Shape;

enum Display {
    Hidden,
    Plain,
    Bar(ProgressBar),
}

pub struct Progress {
    display: Display,
    total: usize,
    started: usize,
    since: Instant,
}

/// Remaining time at the mean pace so far, once any shape has finished.
pub fn eta(elapsed: Duration, finished: usize, total: usize) -> Option<Duration> {
    if finished == 0 {
        return None;
    }
    Some(elapsed.mul_f64(total.saturating_sub(finished) as f64 / finished as f64))
}

/// `1h02m`, `3m05s`, `42s`.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, min, sec) => format!("{min}m{sec:02}s"),
        (h, min, _) => format!("{h}h{min:02}m"),
    }
}

fn shape_text(shape: &Shape) -> String {
    format!("{} bsz {} seq {}", shape.phase.name(), shape.batch, shape.seq)
}

/// The plain line of the `index`-th shape (from 1) of `total`.
pub fn plain_line(index: usize, total: usize, shape: &Shape, eta: Option<Duration>) -> String {
    let eta = eta.map_or_else(String::new, |d| format!(" (ETA {})", short_duration(d)));
    format!("[{index}/{total}] {}{eta}", shape_text(shape))
}

impl Progress {
    /// Progress over `total` shapes; `visible` false (a rank other than 0) shows nothing.
    pub fn new(total: usize, visible: bool) -> Self {
        let display = match (visible, std::io::stderr().is_terminal()) {
            (false, _) => Display::Hidden,
            (true, false) => Display::Plain,
            (true, true) => {
                let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
                let style = ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}  elapsed {elapsed}, ETA {eta}")
                    .expect("the template is valid");
                bar.set_style(style);
                Display::Bar(bar)
            }
        };
        Progress { display, total, started: 0, since: Instant::now() }
    }

    /// `shape` is starting: the shapes before it have finished.
    pub fn start(&mut self, shape: &Shape) {
        let finished = self.started;
        self.started += 1;
        match &self.display {
            Display::Hidden => {}
            Display::Plain => {
                let eta = eta(self.since.elapsed(), finished, self.total);
                eprintln!("{}", plain_line(self.started, self.total, shape, eta));
            }
            Display::Bar(bar) => {
                bar.set_position(finished as u64);
                bar.set_message(shape_text(shape));
            }
        }
    }

    /// Runs `f` with the bar cleared (it prints rows), then redraws it.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.display {
            Display::Bar(bar) => bar.suspend(f),
            _ => f(),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Display::Bar(bar) = &self.display {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_count_shapes_and_estimate_what_is_left() {
        let s = Shape::decode(8, 128);
        assert_eq!(plain_line(1, 4, &s, None), "[1/4] decode bsz 8 seq 128");
        // Two of four shapes took 50 s: two more at the same pace.
        let left = eta(Duration::from_secs(50), 2, 4).unwrap();
        assert_eq!(left, Duration::from_secs(50));
        assert_eq!(plain_line(3, 4, &s, Some(left)), "[3/4] decode bsz 8 seq 128 (ETA 50s)");
        assert_eq!(eta(Duration::from_secs(9), 0, 4), None, "no pace before a shape finished");
        assert_eq!(eta(Duration::from_secs(9), 3, 3), Some(Duration::ZERO));
        assert_eq!(short_duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(short_duration(Duration::from_secs(3720)), "1h02m");
    }

    #[test]
    fn hidden_progress_runs_what_it_suspends() {
        let mut p = Progress::new(2, false);
        p.start(&Shape::prefill(1, 8));
        assert_eq!(p.suspend(|| 7), 7);
        assert_eq!(p.started, 1);
    }
}
