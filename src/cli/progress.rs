//! Progress bars on the operator's terminal for long work (fsck, import,
//! gc), drawn from the progress a command reports, whether it runs in this
//! process or in the daemon. Nothing is drawn with `--quiet` or when stderr
//! is not a terminal.

use indicatif::{ProgressBar, ProgressStyle};

use crate::util::progress::{Progress, Unit};

/// The bar of the task in progress, if any.
pub struct Bars {
    quiet: bool,
    bar: Option<(String, ProgressBar)>,
}

impl Bars {
    pub fn new(quiet: bool) -> Self {
        Self { quiet, bar: None }
    }

    /// Shows `p`: moves the bar of its task, or starts one for a new task.
    pub fn show(&mut self, p: &Progress) {
        if self.quiet {
            return;
        }
        if self.bar.as_ref().is_none_or(|(task, _)| *task != p.task) {
            self.clear();
            let template = match p.unit {
                Unit::Bytes => "{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})",
                Unit::Volumes => "{msg} [{bar:40}] {pos}/{len} volumes",
                Unit::Containers => "{msg} [{bar:40}] {pos}/{len} containers",
            };
            let bar = ProgressBar::new(p.total).with_style(
                ProgressStyle::with_template(template)
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_message(p.task.clone());
            self.bar = Some((p.task.clone(), bar));
        }
        if let Some((_, bar)) = &self.bar {
            bar.set_length(p.total);
            bar.set_position(p.done);
        }
    }

    /// Takes the bar off the terminal (before the command's output).
    pub fn clear(&mut self) {
        if let Some((_, bar)) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        self.clear();
    }
}
