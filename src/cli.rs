//! Command-line definitions (clap derive). Values are validated here, before
//! any command runs, so bad input never causes a side effect.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::ops::copy;
use crate::state::model::{PublishedPort, VmName, VmmChoice};
use crate::state::parse;

#[derive(Debug, Parser)]
#[command(
    name = "banger",
    version,
    about = "Firecracker microVMs for development, on your own Linux host",
    propagate_version = true
)]
pub struct Cli {
    /// Say more on stderr (repeat for more)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, run and manage VMs
    #[command(subcommand)]
    Vm(VmCommand),
    /// Build, import and manage images
    #[command(subcommand)]
    Image(ImageCommand),
    /// Keep booted VMs of an image ready, so that `vm run` and `vm create` start at once
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Check this host for everything banger needs
    Doctor(DoctorArgs),
    /// Delete expired VMs and sweep leaked resources (safe from cron)
    Gc(GcArgs),
    /// Print a shell completion script
    Completions(CompletionsArgs),
    /// Print the man page (roff)
    #[command(hide = true)]
    Man,
    /// Measure VM creation
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Internal: DNS and TAP-pool sidecar (started automatically)
    #[command(hide = true)]
    Sidecar,
    /// Internal: list names for shell completion
    #[command(hide = true, name = "__complete")]
    Complete {
        /// `vm` or `image`
        kind: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Create a VM (and start it unless --no-start)
    #[command(
        after_help = "A started VM whose image has a warm pool (`banger pool set`) and whose \
        --vcpus, --memory, --disk-size, --work-size and --no-nat resolve to the pool's is claimed \
        from it, booted already, and given its name and --ttl. A --publish, a --vmm the pool's \
        VMs do not run under, or an empty pool makes it cold instead. -v and --timings say which."
    )]
    Create(CreateArgs),
    /// Create or start a VM, wait for it, run a command in it over SSH
    #[command(
        after_help = "A VM this run creates is claimed from its image's warm pool (`banger \
        pool set`) when its --vcpus, --memory, --disk-size, --work-size and --no-nat resolve to \
        the pool's: booted already, it is given its name, --ttl and --rm, and --copy and \
        --copy-out work as on any VM. A --publish, a --vmm the pool's VMs do not run under, or an \
        empty pool makes it cold instead. -v and --timings say which."
    )]
    Run(RunArgs),
    /// Start stopped VMs
    Start(StartArgs),
    /// Stop running VMs (Ctrl-Alt-Del, then SIGTERM, then SIGKILL)
    Stop(StopArgs),
    /// Stop and start VMs
    Restart(StartArgs),
    /// Delete VMs with their disks
    #[command(visible_alias = "rm")]
    Delete(DeleteArgs),
    /// List VMs
    #[command(visible_alias = "ls")]
    List(VmListArgs),
    /// Show one VM
    #[command(visible_alias = "inspect")]
    Show(ShowArgs),
    /// Open a shell, or run a command, in a VM over SSH
    Ssh(SshArgs),
    /// Print a VM's console log (or its VMM's own log with --vmm)
    Logs(LogsArgs),
    /// Copy files or trees between the host and a VM (NAME:PATH; `-` is a tar stream)
    Cp(CpArgs),
    /// Print OpenSSH `Host` blocks for VMs (for ssh -F, scp, rsync, IDEs)
    SshConfig(SshConfigArgs),
    /// List a VM's published ports, one a line
    Port(PortArgs),
}

/// Settings shared by `vm create` and `vm run`.
#[derive(Debug, Clone, Args)]
pub struct VmSpec {
    /// Image to boot (default: the default image)
    #[arg(long, value_parser = parse::image_name)]
    pub image: Option<String>,
    #[command(flatten)]
    pub machine: MachineArgs,
    /// Delete the VM after this long (`banger gc` enforces it), e.g. 2h
    #[arg(long, value_parser = parse::duration, allow_hyphen_values = true)]
    pub ttl: Option<Duration>,
    /// Forward [ADDR:]HOST_PORT:GUEST_PORT[/udp] while it runs (repeatable; ADDR: 127.0.0.1)
    #[arg(short = 'p', long, value_name = "PORT", value_parser = PublishedPort::parse)]
    pub publish: Vec<PublishedPort>,
    /// VMM for this VM: auto (Firecracker where it runs guests, else QEMU's
    /// software CPU), firecracker or qemu [default: the config's, auto]
    #[arg(long, value_parser = VmmChoice::parse)]
    pub vmm: Option<VmmChoice>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// What a VM is made with, shared by `vm create`, `vm run` and `pool set`
/// (a claim from a pool compares these).
#[derive(Debug, Clone, Args)]
pub struct MachineArgs {
    /// Number of vCPUs, 1-32 [default: 2]
    #[arg(long, value_parser = parse::vcpus, allow_hyphen_values = true)]
    pub vcpus: Option<u8>,
    /// Memory in MiB, or a size such as 2G [default: 1024]
    #[arg(long, value_parser = parse::memory_mib, allow_hyphen_values = true)]
    pub memory: Option<u32>,
    /// Root disk size (default: the image's rootfs size)
    #[arg(long, value_parser = parse::size, allow_hyphen_values = true)]
    pub disk_size: Option<u64>,
    /// Work disk size, mounted at /root, at least 64M [default: 8G]
    #[arg(long, value_parser = parse::work_size, allow_hyphen_values = true)]
    pub work_size: Option<u64>,
    /// Do not give the VM outbound NAT
    #[arg(long)]
    pub no_nat: bool,
}

impl VmSpec {
    /// The flags as what `ops` creates.
    pub fn resolve(&self, name: Option<VmName>) -> crate::ops::create::Spec {
        crate::ops::create::Spec {
            name,
            image: self.image.clone(),
            vcpus: self.machine.vcpus,
            memory_mib: self.machine.memory,
            disk_size: self.machine.disk_size,
            work_size: self.machine.work_size,
            nat: !self.machine.no_nat,
            published: self.publish.clone(),
            ttl: self.ttl,
            vmm: self.vmm,
            pool: None,
        }
    }
}

/// How `vm create`, `vm run`, `vm start` and `vm restart` wait for the guest
/// (`vm run` always waits: `--no-wait` belongs to the others).
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// How long to wait for the guest [default: 5m]
    #[arg(long, value_parser = parse::duration, allow_hyphen_values = true)]
    pub timeout: Option<Duration>,
    /// Print how long each stage took
    #[arg(long)]
    pub timings: bool,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// VM name (a DNS label); generated when omitted
    #[arg(value_parser = VmName::parse)]
    pub name: Option<VmName>,
    #[command(flatten)]
    pub spec: VmSpec,
    /// Do not wait for the guest to answer (agent and SSH)
    #[arg(long)]
    pub no_wait: bool,
    /// Create the VM and its disks without starting it
    #[arg(long)]
    pub no_start: bool,
    /// Print the VM as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// VM to use: created if missing, started if stopped
    #[arg(long, value_parser = VmName::parse)]
    pub name: Option<VmName>,
    #[command(flatten)]
    pub spec: VmSpec,
    /// Delete the VM afterwards, also when anything fails (only a VM this
    /// run created)
    #[arg(long)]
    pub rm: bool,
    /// Copy into the VM before the command (repeatable)
    #[arg(long, value_name = "HOST:GUEST", value_parser = copy::PathPair::parse_in)]
    pub copy: Vec<copy::PathPair>,
    /// Copy back after the command, whatever its exit code (repeatable)
    #[arg(long, value_name = "GUEST:HOST", value_parser = copy::PathPair::parse_out)]
    pub copy_out: Vec<copy::PathPair>,
    /// Command to run (a shell when omitted)
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// Host paths, NAME:PATH in a VM, or `-` (a tar stream on stdin)
    #[arg(required = true, value_name = "SRC", value_parser = copy::Endpoint::parse)]
    pub sources: Vec<copy::Endpoint>,
    /// A directory or new name, on the host or in a VM, or `-` (stdout)
    #[arg(value_name = "DST", value_parser = copy::Endpoint::parse)]
    pub dest: copy::Endpoint,
}

#[derive(Debug, Args)]
pub struct SshConfigArgs {
    /// VMs to print (all when omitted)
    #[arg(value_parser = VmName::parse)]
    pub names: Vec<VmName>,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// VMs
    #[arg(required = true, value_parser = VmName::parse)]
    pub names: Vec<VmName>,
    /// Do not wait for the guest to answer (agent and SSH)
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// VMs to stop
    #[arg(required = true, value_parser = VmName::parse)]
    pub names: Vec<VmName>,
    /// Kill at once instead of asking the guest to shut down
    #[arg(long)]
    pub force: bool,
    /// How long the guest gets to shut down before SIGTERM [default: 10s]
    #[arg(long, value_parser = parse::duration, allow_hyphen_values = true)]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// VMs to delete, with their disks
    #[arg(required = true, value_parser = VmName::parse)]
    pub names: Vec<VmName>,
    /// Kill running VMs at once instead of shutting them down
    #[arg(long, short)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON
    #[arg(long, conflicts_with = "quiet")]
    pub json: bool,
    /// Print names only
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct VmListArgs {
    #[command(flatten)]
    pub list: ListArgs,
    /// Also list the VMs warm pools keep ready (`banger pool ls`)
    #[arg(short, long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// VM to show
    #[arg(value_parser = VmName::parse)]
    pub name: VmName,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PortArgs {
    /// The VM
    #[arg(value_parser = VmName::parse)]
    pub name: VmName,
}

#[derive(Debug, Args)]
pub struct SshArgs {
    /// A running VM
    #[arg(value_parser = VmName::parse)]
    pub name: VmName,
    /// Command to run instead of a login shell
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// VM whose log to print
    #[arg(value_parser = VmName::parse)]
    pub name: VmName,
    /// Keep printing as the log grows
    #[arg(short, long)]
    pub follow: bool,
    /// Show the VMM's own log instead of the guest console
    #[arg(long)]
    pub vmm: bool,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build an image from Debian packages (kernel, rootfs, agent)
    Build(ImageBuildArgs),
    /// Register an existing kernel and rootfs as an image
    Import(ImageImportArgs),
    /// Make a stopped VM's root disk (and with --with-work its work disk) a new image
    Commit(ImageCommitArgs),
    /// List images
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show one image and its manifest
    #[command(visible_alias = "inspect")]
    Show(ImageShowArgs),
    /// Delete an image no VM uses
    #[command(visible_alias = "rm")]
    Delete(ImageNameArg),
    /// Make an image the default for new VMs
    Default(ImageNameArg),
}

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Create or change an image's warm pool; it fills in the background
    #[command(
        after_help = "`banger pool fill`, started detached, makes and boots the pool's VMs \
        and exits when the pool is full. A claim starts it again to replace the VM it took, and \
        `banger gc` refills short pools and replaces pool VMs older than --max-age or made before \
        their image was rebuilt. VMs of the pool made with another spec are replaced at once."
    )]
    Set(PoolSetArgs),
    /// List warm pools with their ready and filling VMs and their spec
    #[command(visible_alias = "ls")]
    List(PoolListArgs),
    /// Remove an image's warm pool, stopping and deleting its VMs
    #[command(visible_alias = "rm")]
    Delete(ImageNameArg),
    /// Internal: make and boot what the pools lack (started automatically)
    #[command(hide = true)]
    Fill,
}

#[derive(Debug, Args)]
pub struct PoolSetArgs {
    /// The image whose VMs the pool keeps
    #[arg(value_parser = parse::image_name)]
    pub image: String,
    /// How many booted VMs to keep ready, 0-64
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=64))]
    pub size: u32,
    /// What each VM is made with: what a claim's flags must come to
    #[command(flatten)]
    pub machine: MachineArgs,
    /// Replace pool VMs older than this (by `banger gc`) [default: 24h]
    #[arg(long, value_parser = parse::duration, allow_hyphen_values = true)]
    pub max_age: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct PoolListArgs {
    /// Print JSON
    #[arg(long, conflicts_with = "quiet")]
    pub json: bool,
    /// Print image names only
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ImageBuildArgs {
    /// Name of the new image (a DNS label)
    #[arg(value_parser = parse::image_name)]
    pub name: String,
    /// Debian suite to bootstrap
    #[arg(long, default_value = "bookworm")]
    pub suite: String,
    /// Use this uncompressed ELF kernel instead of Debian's
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Initramfs to use with --kernel
    #[arg(long, requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// Root filesystem size (default: content plus headroom)
    #[arg(long, value_parser = parse::size, allow_hyphen_values = true)]
    pub size: Option<u64>,
    /// Extra Debian packages, comma separated
    #[arg(long, value_delimiter = ',')]
    pub packages: Vec<String>,
    /// Make it the default image
    #[arg(long)]
    pub default: bool,
    /// Replace an existing image of that name
    #[arg(long)]
    pub force: bool,
    /// Print the manifest as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ImageImportArgs {
    /// Name of the new image (a DNS label)
    #[arg(value_parser = parse::image_name)]
    pub name: String,
    /// Uncompressed ELF kernel (vmlinux)
    #[arg(long)]
    pub kernel: PathBuf,
    /// ext4 root filesystem
    #[arg(long)]
    pub rootfs: PathBuf,
    /// Initramfs
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// ext4 skeleton of /root (made when omitted)
    #[arg(long)]
    pub work_seed: Option<PathBuf>,
    /// Make it the default image
    #[arg(long)]
    pub default: bool,
}

#[derive(Debug, Args)]
pub struct ImageCommitArgs {
    /// Stopped VM whose disks to commit
    #[arg(value_parser = VmName::parse)]
    pub vm: VmName,
    /// Name of the new image (a DNS label)
    #[arg(value_parser = parse::image_name)]
    pub name: String,
    /// Make the VM's work disk (/root) the new image's work seed, shrunk to its content
    #[arg(long)]
    pub with_work: bool,
    /// Make it the default image
    #[arg(long)]
    pub default: bool,
}

#[derive(Debug, Args)]
pub struct ImageShowArgs {
    /// Image to show
    #[arg(value_parser = parse::image_name)]
    pub name: String,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ImageNameArg {
    /// An image
    #[arg(value_parser = parse::image_name)]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
    /// Also boot the default image once in a throwaway VM (always deleted)
    #[arg(long)]
    pub boot: bool,
    /// How long --boot waits for the guest's agent
    #[arg(long, requires = "boot", default_value = "60s", value_parser = parse::duration, allow_hyphen_values = true)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Say what would be removed, change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Create and delete VMs, reporting each stage's min/median/max
    Create(BenchCreateArgs),
}

#[derive(Debug, Args)]
pub struct BenchCreateArgs {
    /// Number of VMs to create and delete
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100), allow_hyphen_values = true)]
    pub runs: u32,
    #[arg(long, value_parser = parse::image_name)]
    pub image: Option<String>,
    /// Include waiting for the guest (agent and SSH)
    #[arg(long)]
    pub wait: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}
