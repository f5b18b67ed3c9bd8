//! `sluice get rollout NAME [--watch]`.

use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::info::{self, RolloutView};
use super::kube::{CliError, Target, connect};
use super::render::{Style, redraw, rollout_tree, structured};
use super::{KubeArgs, Output};

/// What to get.
#[derive(Subcommand, Debug)]
pub enum GetWhat {
    /// One rollout as a tree.
    #[command(visible_alias = "rollouts", visible_alias = "ro")]
    Rollout(GetRolloutArgs),
}

/// Options of `get rollout`.
#[derive(Args, Debug)]
pub struct GetRolloutArgs {
    /// Rollout name.
    pub name: String,
    /// Keep watching and redraw in place on every change.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Stop watching after this long (Go duration, e.g. `5m`; default: until interrupted).
    #[arg(long, requires = "watch")]
    pub timeout: Option<kube::core::Duration>,
    /// No colour even on a terminal.
    #[arg(long)]
    pub no_color: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// The view of one rollout, read now.
pub async fn rollout_view(target: &Target, name: &str) -> Result<RolloutView, CliError> {
    let snapshot = info::fetch(target, name).await?;
    Ok(info::view(&snapshot))
}

/// Renders a view in the requested format.
pub fn render_view(view: &RolloutView, output: Output, style: Style) -> anyhow::Result<String> {
    Ok(match output {
        Output::Text => rollout_tree(view, style),
        other => structured(view, other)?,
    })
}

/// Runs `get`.
pub async fn run(what: GetWhat) -> anyhow::Result<i32> {
    let GetWhat::Rollout(args) = what;
    let target = connect(&args.kube).await?;
    let style = Style::detect(args.no_color);
    let mut stdout = std::io::stdout();
    if !args.watch {
        let view = rollout_view(&target, &args.name).await?;
        stdout.write_all(render_view(&view, args.output, style)?.as_bytes())?;
        return Ok(0);
    }
    watch(&target, &args, style, &mut stdout).await
}

/// Rows and columns of the controlling terminal (`stty size`), if there is one.
fn terminal_size() -> Option<(usize, usize)> {
    let tty = std::fs::File::open("/dev/tty").ok()?;
    let out = std::process::Command::new("stty")
        .arg("size")
        .stdin(tty)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let mut parts = text.split_whitespace().map(|p| p.parse::<usize>().ok());
    Some((parts.next()??, parts.next()??))
}

/// Cuts a frame to what fits on the screen: a frame taller than the terminal would scroll, and
/// redrawing from the top would then leave copies behind. Long lines count for the rows they
/// wrap onto.
pub fn fit(frame: &str, rows: usize, cols: usize) -> String {
    let cols = cols.max(1);
    let lines: Vec<&str> = frame.lines().collect();
    let height = |l: &str| visible_width(l).max(1).div_ceil(cols);
    if lines.iter().map(|l| height(l)).sum::<usize>() < rows {
        return frame.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for (i, l) in lines.iter().enumerate() {
        // Keep the last row for the note.
        if used + height(l) >= rows.saturating_sub(1) {
            out.push_str(&format!(
                "... {} more lines: enlarge the terminal or use `-o yaml`\n",
                lines.len() - i
            ));
            return out;
        }
        used += height(l);
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// Characters a line takes on screen: colour escapes take none.
fn visible_width(line: &str) -> usize {
    let mut width = 0;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters final-byte (a letter).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            width += 1;
        }
    }
    width
}

/// Polls once a second and redraws when what would be printed changed. Polling (rather than
/// three watches) keeps the view consistent across the Rollout, its ReplicaSets and its runs,
/// and a second is below what a person notices in a rollout that moves in tens of seconds.
async fn watch(
    target: &Target,
    args: &GetRolloutArgs,
    style: Style,
    out: &mut impl Write,
) -> anyhow::Result<i32> {
    let in_place =
        args.output == Output::Text && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let deadline = args
        .timeout
        .map(|d| tokio::time::Instant::now() + Duration::from(d));
    let mut last = String::new();
    let mut last_good = String::new();
    let mut first = true;
    loop {
        let frame = match rollout_view(&target.clone(), &args.name).await {
            Ok(view) => {
                last_good = render_view(&view, args.output, style)?;
                last_good.clone()
            }
            // Not found on the first read is the user's typo; later it is a deletion or a
            // network blip: keep watching and say so.
            Err(e) if first => return Err(e.into()),
            Err(e) => format!("{last_good}\nerror: {e}\n"),
        };
        if frame != last {
            if in_place {
                if first {
                    // Clear once, then only overwrite: no flicker.
                    out.write_all(b"\x1b[2J")?;
                }
                let fitted = match terminal_size() {
                    Some((rows, cols)) => fit(&frame, rows, cols),
                    None => frame.clone(),
                };
                out.write_all(redraw(&fitted).as_bytes())?;
            } else {
                if !first && args.output == Output::Text {
                    out.write_all(b"\n")?;
                }
                out.write_all(frame.as_bytes())?;
            }
            out.flush()?;
            last = frame;
        }
        first = false;
        let pause = tokio::time::sleep(Duration::from_secs(1));
        match deadline {
            Some(d) if tokio::time::Instant::now() >= d => return Ok(0),
            Some(d) => {
                tokio::select! {
                    _ = pause => {}
                    _ = tokio::time::sleep_until(d) => return Ok(0),
                }
            }
            None => pause.await,
        }
    }
}
