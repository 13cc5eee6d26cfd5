//! The terminal the dashboard draws on, live or replaying: one session
//! type for both. Raw mode and the alternate screen while it runs, given
//! back on every way out (return, error, SIGTERM, SIGINT, SIGHUP, panic);
//! keys read on a thread of their own; and a backend that lets no control
//! character reach the terminal, whatever a process named itself.

use std::io::{self, IsTerminal as _, Stdout};

use anyhow::{Context as _, bail};
use crossterm::{
    execute,
    terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode},
};
use ratatui::{
    Terminal,
    backend::{Backend, ClearType, CrosstermBackend, WindowSize},
    buffer::Cell,
    layout::{Position, Size},
};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc::{self, UnboundedReceiver},
};

use super::{Event, spawn_key_reader};

/// A running dashboard's terminal and its input.
pub struct Session {
    pub terminal: Terminal<SafeBackend<CrosstermBackend<Stdout>>>,
    pub events: UnboundedReceiver<Event>,
    _guard: Guard,
}

impl Session {
    /// Takes over the terminal; `what` names the headless alternative for
    /// the error when there is no terminal. Needs a tokio runtime (the
    /// signals).
    pub fn start(headless: &str) -> anyhow::Result<Self> {
        if !io::stdout().is_terminal() || !io::stdin().is_terminal() {
            bail!("the dashboard needs a terminal; {headless}");
        }
        let (tx, events) = mpsc::unbounded_channel();
        // The signals first: from here on none of them ends the process
        // with the terminal left raw.
        for kind in [
            SignalKind::terminate(),
            SignalKind::interrupt(),
            SignalKind::hangup(),
        ] {
            let mut sig = signal(kind).context("cannot handle signals")?;
            let tx = tx.clone();
            tokio::spawn(async move {
                sig.recv().await;
                let _ = tx.send(Event::Quit);
            });
        }
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        let guard = Guard::enter().context("cannot switch the terminal to raw mode")?;
        let mut terminal = Terminal::new(SafeBackend(CrosstermBackend::new(io::stdout())))?;
        terminal.clear()?;
        // Terminal input on a thread of its own: crossterm's read blocks.
        // When the terminal goes away, the dashboard ends.
        spawn_key_reader(tx)?;
        Ok(Self {
            terminal,
            events,
            _guard: guard,
        })
    }
}

/// Raw mode and the alternate screen, left on drop.
struct Guard;

impl Guard {
    fn enter() -> io::Result<Self> {
        enable_raw_mode()?;
        if let Err(e) = execute!(io::stdout(), EnterAlternateScreen) {
            let _ = disable_raw_mode();
            return Err(e);
        }
        Ok(Self)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        restore();
    }
}

fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen, crossterm::cursor::Show);
}

/// A backend whose cells never carry a control character to the terminal:
/// ratatui drops them from plain spans, but not every widget does, and a
/// process name is whatever bytes the process chose. Such a cell is drawn
/// as `?`.
pub struct SafeBackend<B>(pub B);

fn unsafe_cell(cell: &Cell) -> bool {
    cell.symbol().chars().any(crate::util::escape::unsafe_char)
}

impl<B: Backend> Backend for SafeBackend<B> {
    fn draw<'a, I>(&mut self, content: I) -> io::Result<()>
    where
        I: Iterator<Item = (u16, u16, &'a Cell)>,
    {
        let cells: Vec<(u16, u16, &Cell)> = content.collect();
        if !cells.iter().any(|(_, _, c)| unsafe_cell(c)) {
            return self.0.draw(cells.into_iter());
        }
        let fixed: Vec<(u16, u16, Cell)> = cells
            .into_iter()
            .map(|(x, y, c)| {
                let mut c = c.clone();
                if unsafe_cell(&c) {
                    c.set_symbol("?");
                }
                (x, y, c)
            })
            .collect();
        self.0.draw(fixed.iter().map(|(x, y, c)| (*x, *y, c)))
    }

    fn append_lines(&mut self, n: u16) -> io::Result<()> {
        self.0.append_lines(n)
    }

    fn hide_cursor(&mut self) -> io::Result<()> {
        self.0.hide_cursor()
    }

    fn show_cursor(&mut self) -> io::Result<()> {
        self.0.show_cursor()
    }

    fn get_cursor_position(&mut self) -> io::Result<Position> {
        self.0.get_cursor_position()
    }

    fn set_cursor_position<P: Into<Position>>(&mut self, position: P) -> io::Result<()> {
        self.0.set_cursor_position(position)
    }

    fn clear(&mut self) -> io::Result<()> {
        self.0.clear()
    }

    fn clear_region(&mut self, clear_type: ClearType) -> io::Result<()> {
        self.0.clear_region(clear_type)
    }

    fn size(&self) -> io::Result<Size> {
        self.0.size()
    }

    fn window_size(&mut self) -> io::Result<WindowSize> {
        self.0.window_size()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use ratatui::{
        backend::TestBackend,
        widgets::{Paragraph, Wrap},
    };

    use super::*;

    #[test]
    fn no_control_character_reaches_the_terminal() {
        let mut t = Terminal::new(SafeBackend(TestBackend::new(40, 3))).expect("terminal");
        let pwn = "pid 7 \u{1b}]2;PWN\u{7}\u{1b}[2J x\ny";
        t.draw(|f| {
            f.render_widget(Paragraph::new(pwn).wrap(Wrap { trim: false }), f.area());
        })
        .expect("draw");
        let b = t.backend().0.buffer();
        for cell in &b.content {
            assert!(
                !cell.symbol().chars().any(char::is_control),
                "{:?}",
                cell.symbol()
            );
        }
    }
}
