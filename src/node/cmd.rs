//! Running the external filesystem tools (blkid, mkfs, resize).

use std::process::Stdio;

use tokio::process::Command;

use super::error::NodeError;

/// What a finished tool run produced.
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Converts a failed run into an error carrying the tool's own words,
    /// which are usually the most useful thing to show an operator.
    pub fn into_error(self, tool: &str) -> NodeError {
        let status = match self.code {
            Some(c) => format!("exit code {c}"),
            None => "killed by signal".to_string(),
        };
        let mut output = self.stderr.trim().to_string();
        if output.is_empty() {
            output = self.stdout.trim().to_string();
        }
        NodeError::Tool {
            tool: tool.to_string(),
            status,
            output,
        }
    }
}

/// At most this many lines of a tool's complaint go into an error: the
/// first lines say what went wrong, the rest is usually a usage dump.
pub const SHORT_ERROR_LINES: usize = 3;
/// ... and at most this many bytes.
pub const SHORT_ERROR_BYTES: usize = 300;

impl Output {
    /// Like [`Output::into_error`], keeping only the first lines of the
    /// tool's output (for tools that print their whole usage on failure).
    pub fn into_short_error(self, tool: &str) -> NodeError {
        match self.into_error(tool) {
            NodeError::Tool {
                tool,
                status,
                output,
            } => NodeError::Tool {
                tool,
                status,
                output: shorten(&output),
            },
            other => other,
        }
    }
}

/// The first [`SHORT_ERROR_LINES`] non-empty lines of `text`, cut to
/// [`SHORT_ERROR_BYTES`] (on a character boundary), with `…` when cut.
pub fn shorten(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let mut out = lines
        .iter()
        .take(SHORT_ERROR_LINES)
        .copied()
        .collect::<Vec<_>>()
        .join("; ");
    let mut cut = lines.len() > SHORT_ERROR_LINES;
    if out.len() > SHORT_ERROR_BYTES {
        let mut end = SHORT_ERROR_BYTES;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        cut = true;
    }
    if cut {
        out.push('…');
    }
    out
}

/// Runs `tool args...` with stdin closed so nothing can ever wait for an
/// interactive confirmation.
pub async fn run(tool: &str, args: &[&str]) -> Result<Output, NodeError> {
    run_with_input(tool, args, None).await
}

/// Like [`run`], feeding `input` on stdin. Secrets travel this way so they
/// never appear in argv (visible to every process via /proc) or in logs.
pub async fn run_with_input(
    tool: &str,
    args: &[&str],
    input: Option<&[u8]>,
) -> Result<Output, NodeError> {
    use tokio::io::AsyncWriteExt;

    tracing::debug!(tool, ?args, "running");
    let mut child = Command::new(tool)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| NodeError::io(format!("starting {tool}"), e))?;
    if let (Some(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(bytes)
            .await
            .map_err(|e| NodeError::io(format!("writing to {tool}"), e))?;
        // Dropping stdin closes it, which tells the tool the input ended.
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| NodeError::io(format!("waiting for {tool}"), e))?;
    Ok(Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs a tool and treats any non-zero exit as an error.
pub async fn run_ok(tool: &str, args: &[&str]) -> Result<Output, NodeError> {
    let out = run(tool, args).await?;
    if out.success() {
        Ok(out)
    } else {
        Err(out.into_error(tool))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorten_keeps_the_first_lines() {
        let usage = format!(
            "Filesystem must be larger than 300MB.\nUsage: mkfs.xfs\n{}",
            "/* x */ [-b size=num]\n".repeat(60)
        );
        let s = shorten(&usage);
        assert!(
            s.starts_with("Filesystem must be larger than 300MB.; Usage: mkfs.xfs"),
            "{s}"
        );
        assert!(s.len() <= SHORT_ERROR_BYTES + '…'.len_utf8());
        assert!(s.ends_with('…'));
        assert_eq!(shorten("one line\n"), "one line");
        let long = "é".repeat(400);
        assert!(shorten(&long).len() <= SHORT_ERROR_BYTES + 3);
    }
}
