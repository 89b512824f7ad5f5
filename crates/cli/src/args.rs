//! The command line, as clap types. Values with a closed vocabulary (statuses,
//! kinds, weeks, dates) are taken as text and parsed by the engine, so a bad value
//! gets the same one-line error as any other bad input.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// duet: a couple's shared record of issues, steps, check-ins and agreements,
/// kept on their own devices.
#[derive(Debug, Parser)]
#[command(name = "duet", version, about, max_term_width = 100)]
pub struct Cli {
    /// The home folder [default: the platform's data directory]
    #[arg(long, global = true, env = "DUET_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// Print machine-readable JSON instead of tables
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a home and a new shared space on this device
    Init {
        /// Your name, as your partner will see it
        #[arg(long)]
        name: String,
        /// This device's name [default: the host name]
        #[arg(long)]
        device_name: Option<String>,
    },
    /// Show this home, this device and where things stand
    Status,
    /// Raise, read and work on issues
    #[command(subcommand)]
    Issue(IssueCmd),
    /// Commit to steps and record how they went
    #[command(subcommand)]
    Step(StepCmd),
    /// The weekly check-in ("State of the Union")
    #[command(subcommand)]
    Checkin(CheckinCmd),
    /// Boundaries, conflict rules and rituals
    #[command(subcommand)]
    Agreement(AgreementCmd),
    /// Your private journal: never leaves this device
    #[command(subcommand)]
    Journal(JournalCmd),
    /// Your private review date: visible only to you, on this device
    Review {
        /// The date (YYYY-MM-DD); without it, shows the current one
        date: Option<String>,
        /// Clear the review date
        #[arg(long, conflicts_with = "date")]
        clear: bool,
    },
    /// The devices of the space
    #[command(subcommand)]
    Device(DeviceCmd),
    /// Pair another device: your partner's, or another of your own
    #[command(subcommand)]
    Pair(PairCmd),
    /// Sync once with the couple's other devices, then exit
    Sync {
        /// The other device's address (host:port); without it, every device
        /// this home has synced with before, those found on the local network,
        /// and the space's relay
        addr: Option<String>,
        /// Also sync through this relay (host:port), and make it the space's
        /// relay for every device
        #[arg(long, value_name = "ADDR")]
        relay: Option<String>,
        /// Do not look for the couple's devices on the local network
        #[arg(long)]
        no_discovery: bool,
    },
    /// Keep this device in sync: accept the couple's devices, dial known ones,
    /// and push every edit as it happens (Ctrl-C stops)
    Serve {
        /// Where to listen
        #[arg(long, default_value = DEFAULT_LISTEN)]
        listen: String,
        /// A device to dial and stay connected to (repeatable)
        #[arg(long = "peer", value_name = "ADDR")]
        peers: Vec<String>,
        /// Post to and fetch from this relay (host:port), and make it the
        /// space's relay for every device [default: the space's relay]
        #[arg(long, value_name = "ADDR")]
        relay: Option<String>,
        /// Do not announce this device on the local network
        #[arg(long)]
        no_discovery: bool,
    },
    /// Sealed bundles of changes, to carry on a USB stick or by email
    #[command(subcommand)]
    Bundle(BundleCmd),
    /// Run a mailbox relay: keeps sealed bundles for the couples that use it,
    /// and can read none of them (Ctrl-C stops)
    Relay {
        /// Where to listen
        #[arg(long, default_value = DEFAULT_RELAY_LISTEN)]
        listen: String,
        /// Where to keep bundles [default: the platform's data directory, duet-relay]
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        #[command(flatten)]
        limits: RelayLimits,
    },
    /// Every change, newest first, with who made it
    Log {
        /// How many changes to show
        #[arg(long, short = 'n', default_value_t = 50)]
        limit: usize,
        /// Show every change
        #[arg(long, conflicts_with = "limit")]
        all: bool,
    },
    /// Export everything: JSON, Markdown, or the raw automerge document
    Export {
        /// json, markdown or automerge
        #[arg(long, short = 'f', default_value = "json")]
        format: String,
        /// Write to this file instead of standard output
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
        /// Include your private journal (JSON and Markdown only)
        #[arg(long)]
        private: bool,
    },
}

/// `duet issue ...`
#[derive(Debug, Subcommand)]
pub enum IssueCmd {
    /// Raise an issue
    Add {
        /// A short title (at most 300 characters)
        title: String,
        /// The longer story
        #[arg(long)]
        body: Option<String>,
        /// unclassified, solvable or perpetual
        #[arg(long)]
        kind: Option<String>,
        #[command(flatten)]
        startup: Startup,
        /// A tag (repeatable)
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
    },
    /// List issues
    List {
        /// Only this status (open, discussing, agreed, resolved, managing, parked)
        #[arg(long)]
        status: Option<String>,
        /// Only this kind (unclassified, solvable, perpetual)
        #[arg(long)]
        kind: Option<String>,
    },
    /// Show an issue with its steps, notes and any conflicting edits
    Show {
        /// The issue's id (any unique prefix)
        id: String,
    },
    /// Change an issue's title, body or kind
    Edit {
        /// The issue's id
        id: String,
        /// A new title
        #[arg(long)]
        title: Option<String>,
        /// A new body
        #[arg(long)]
        body: Option<String>,
        /// A new kind
        #[arg(long)]
        kind: Option<String>,
    },
    /// Set an issue's status
    Status {
        /// The issue's id
        id: String,
        /// open, discussing, agreed, resolved, managing or parked
        status: String,
    },
    /// Add a note to an issue
    Note {
        /// The issue's id
        id: String,
        /// The note
        text: String,
    },
    /// Tag an issue
    Tag {
        /// The issue's id
        id: String,
        /// The tag
        tag: String,
    },
}

/// A soft start-up: "I feel ... about ... and I need ...".
#[derive(Debug, Args)]
pub struct Startup {
    /// Soft start-up: "I feel ..."
    #[arg(long)]
    pub feel: Option<String>,
    /// Soft start-up: "... about ..."
    #[arg(long)]
    pub about: Option<String>,
    /// Soft start-up: "... and I need ..."
    #[arg(long)]
    pub need: Option<String>,
}

/// `duet step ...`
#[derive(Debug, Subcommand)]
pub enum StepCmd {
    /// Commit to a step on an issue
    Add {
        /// The issue's id
        issue: String,
        /// What will be done
        text: String,
        /// me, partner or both
        #[arg(long, default_value = "me")]
        owner: String,
        /// By when (YYYY-MM-DD)
        #[arg(long)]
        due: Option<String>,
    },
    /// Accept a step your partner proposed
    Accept {
        /// The step's id
        step: String,
    },
    /// Mark a step done
    Done {
        /// The step's id
        step: String,
        /// kept, partly, missed or renegotiated
        #[arg(long, default_value = "kept")]
        outcome: String,
    },
    /// Both partners' steps side by side
    List {
        /// Include steps already done
        #[arg(long)]
        all: bool,
    },
}

/// `duet checkin ...`
#[derive(Debug, Subcommand)]
pub enum CheckinCmd {
    /// Show a week's check-in
    Show {
        #[command(flatten)]
        week: WeekArg,
    },
    /// List every week's check-in
    List,
    /// Appreciate something specific your partner did
    Appreciate {
        /// What
        text: String,
        #[command(flatten)]
        week: WeekArg,
    },
    /// Something that went well
    Well {
        /// What
        text: String,
        #[command(flatten)]
        week: WeekArg,
    },
    /// Put an issue on the agenda
    Agenda {
        /// The issue's id
        issue: String,
        #[command(flatten)]
        week: WeekArg,
    },
    /// "What can I do next week to make you feel more loved?"
    Request {
        /// The request
        text: String,
        #[command(flatten)]
        week: WeekArg,
    },
    /// Rate the week, 1 to 10
    Rate {
        /// The rating
        #[arg(allow_negative_numbers = true)]
        rating: String,
        #[command(flatten)]
        week: WeekArg,
    },
    /// Log quality time
    Time {
        /// parting, reunion, appreciation, affection, date or meeting
        kind: String,
        /// Minutes
        #[arg(allow_negative_numbers = true)]
        minutes: String,
        #[command(flatten)]
        week: WeekArg,
    },
}

/// Which week.
#[derive(Debug, Args)]
pub struct WeekArg {
    /// The ISO week, such as 2026-W48 [default: this week]
    #[arg(long)]
    pub week: Option<String>,
}

/// `duet agreement ...`
#[derive(Debug, Subcommand)]
pub enum AgreementCmd {
    /// Propose an agreement (you accept it at once)
    Add {
        /// The agreement
        text: String,
        /// boundary, conflict-rule or ritual
        #[arg(long, default_value = "boundary")]
        kind: String,
    },
    /// Accept the current version of an agreement
    Accept {
        /// The agreement's id
        id: String,
    },
    /// Rewrite an agreement as a new version
    Edit {
        /// The agreement's id
        id: String,
        /// The new text
        text: String,
    },
    /// List agreements
    List,
}

/// `duet journal ...`
#[derive(Debug, Subcommand)]
pub enum JournalCmd {
    /// Write an entry
    Add {
        /// The entry
        text: String,
    },
    /// Read your entries
    List,
}

/// `duet device ...`
#[derive(Debug, Subcommand)]
pub enum DeviceCmd {
    /// List the space's devices
    List,
    /// Revoke a lost or retired device: it can no longer connect, and edits it
    /// makes from now on are refused by every device that learns of it
    Revoke {
        /// The device's id (any unique prefix)
        id: String,
    },
}

/// `duet bundle ...`
#[derive(Debug, Subcommand)]
pub enum BundleCmd {
    /// Write this device's changes, sealed for the couple's devices, to a file
    Export {
        /// The file to write
        file: PathBuf,
        /// Only what the partner's devices are not known to have
        #[arg(long)]
        since_partner_saw: bool,
    },
    /// Apply a bundle made on another of the couple's devices
    Import {
        /// The bundle file
        file: PathBuf,
    },
}

/// `duet relay`'s limits, so that no one can fill it or take its
/// connections. An address is an IPv4 host or an IPv6 /64.
#[derive(Debug, Clone, Args)]
pub struct RelayLimits {
    /// Storage per space, in MiB
    #[arg(long, default_value_t = 64)]
    pub quota_mib: u64,
    /// Days to keep a bundle that some device has not fetched
    #[arg(long, default_value_t = 30)]
    pub retention_days: u64,
    /// Storage over all spaces (bundles and device lists), in MiB
    #[arg(long, default_value_t = 4096)]
    pub max_storage_mib: u64,
    /// Spaces one device key may register
    #[arg(long, default_value_t = 4)]
    pub max_spaces_per_key: u64,
    /// Spaces that may be registered from one address
    #[arg(long, default_value_t = 16)]
    pub max_spaces_per_address: u64,
    /// Connections one address may hold at once
    #[arg(long, default_value_t = 32)]
    pub max_connections_per_address: usize,
    /// Connections one address may open at once before its rate applies
    #[arg(long, default_value_t = 20)]
    pub handshake_burst: u32,
    /// Connections one address may open per minute, after its burst
    #[arg(long, default_value_t = 120)]
    pub handshakes_per_minute: u32,
}

/// Where `duet relay` listens by default.
pub const DEFAULT_RELAY_LISTEN: &str = "0.0.0.0:7490";

/// Where `pair host` and `serve` listen by default.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7480";

/// `duet pair ...`
#[derive(Debug, Subcommand)]
pub enum PairCmd {
    /// Wait for one device to pair, showing the code to type on it; admit it
    /// once you confirm that its screen shows the same phrase as this one
    Host {
        /// Where to listen
        #[arg(long, default_value = DEFAULT_LISTEN)]
        listen: String,
        /// Use this code instead of a new random one (`-`: read it from
        /// standard input; a code written here is visible to other users of
        /// this computer)
        #[arg(long)]
        code: Option<String>,
        /// Pair another device of yours (by default: your partner's first device)
        #[arg(long)]
        own_device: bool,
    },
    /// Join the space of a device running `duet pair host`
    ///
    /// Give only its address and type the code it shows when asked (or pipe
    /// it on standard input). The code may also come first, or `-` to read it
    /// from standard input; a code written on the command line is visible to
    /// other users of this computer.
    Join {
        /// The code it shows (optional, see above), then its address
        /// (host:port)
        #[arg(value_name = "[CODE] ADDR", num_args = 1..=2, required = true)]
        code_and_addr: Vec<String>,
        /// Ignored: the host chooses whose device this is (`pair host --own-device`)
        #[arg(long, hide = true)]
        same_person: bool,
        /// Your name, when this device has no home yet (one is created)
        #[arg(long)]
        name: Option<String>,
    },
}
