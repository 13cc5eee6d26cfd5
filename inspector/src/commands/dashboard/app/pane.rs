//! The five panes, and how panes 2 and 3 order their rows.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Binds,
    Ports,
    Reuseport,
    Scenarios,
    Ephemeral,
}

impl Pane {
    pub const ALL: [Pane; 5] = [
        Pane::Binds,
        Pane::Ports,
        Pane::Reuseport,
        Pane::Scenarios,
        Pane::Ephemeral,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Pane::Binds => "Bind decisions",
            Pane::Ports => "Ports & TIME_WAIT",
            Pane::Reuseport => "Reuseport",
            Pane::Scenarios => "Scenarios",
            Pane::Ephemeral => "Ephemeral ports",
        }
    }

    /// The tab's label where the full titles do not fit (80 columns).
    pub fn short_title(self) -> &'static str {
        match self {
            Pane::Ephemeral => "Ephem.",
            p => p.title(),
        }
    }

    pub(super) fn index(self) -> usize {
        Self::ALL.iter().position(|p| *p == self).unwrap_or(0)
    }
}

/// How panes 2 and 3 order their rows (`s` cycles through the pane's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// Most sockets first (ports).
    Busiest,
    Port,
    TimeWait,
    Deliveries,
    /// Highest max/mean first (groups).
    Imbalance,
}

impl SortKey {
    pub fn name(self) -> &'static str {
        match self {
            Self::Busiest => "busiest",
            Self::Port => "port",
            Self::TimeWait => "TIME_WAIT",
            Self::Deliveries => "deliveries",
            Self::Imbalance => "imbalance",
        }
    }

    pub(super) fn next_ports(self) -> Self {
        match self {
            Self::Busiest => Self::Port,
            Self::Port => Self::TimeWait,
            _ => Self::Busiest,
        }
    }

    pub(super) fn next_groups(self) -> Self {
        match self {
            Self::Port => Self::Deliveries,
            Self::Deliveries => Self::Imbalance,
            _ => Self::Port,
        }
    }
}
