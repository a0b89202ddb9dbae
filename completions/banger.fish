# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_banger_global_optspecs
    string join \n v/verbose h/help V/version
end

function __fish_banger_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_banger_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_banger_using_subcommand
    set -l cmd (__fish_banger_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c banger -n "__fish_banger_needs_command" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_needs_command" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_needs_command" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_needs_command" -f -a "vm" -d 'Create, run and manage VMs'
complete -c banger -n "__fish_banger_needs_command" -f -a "image" -d 'Build, import and manage images'
complete -c banger -n "__fish_banger_needs_command" -f -a "doctor" -d 'Check this host for everything banger needs'
complete -c banger -n "__fish_banger_needs_command" -f -a "gc" -d 'Delete expired VMs and sweep leaked resources (safe from cron)'
complete -c banger -n "__fish_banger_needs_command" -f -a "completions" -d 'Print a shell completion script'
complete -c banger -n "__fish_banger_needs_command" -f -a "man" -d 'Print the man page (roff)'
complete -c banger -n "__fish_banger_needs_command" -f -a "bench" -d 'Measure VM creation'
complete -c banger -n "__fish_banger_needs_command" -f -a "sidecar" -d 'Internal: DNS and TAP-pool sidecar (started automatically)'
complete -c banger -n "__fish_banger_needs_command" -f -a "__complete" -d 'Internal: list names for shell completion'
complete -c banger -n "__fish_banger_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c banger -n "__fish_banger_using_subcommand vm; and not __fish_seen_subcommand_from create run start stop restart delete rm list ls show inspect ssh logs cp ssh-config port help" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand vm; and not __fish_seen_subcommand_from create run start stop restart delete rm list ls show inspect ssh logs cp ssh-config port help" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand vm; and not __fish_seen_subcommand_from create run start stop restart delete rm list ls show inspect ssh logs cp ssh-config port help" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand vm; and not __fish_seen_subcommand_from create run start stop restart delete rm list ls show inspect ssh logs cp ssh-config port help" -f -a "create" -d 'Create a VM (and start it unless --no-start)'
complete -c banger -n "__fish_banger_using_subcommand vm; and not __fish_seen_subcommand_from create run start stop restart delete rm list ls show inspect ssh logs cp ssh-config port help" -f -a "run" -d 'Create or start a VM, wait for it, run a command in it over SSH'
complete -c banger -n "__fish_banger_using_subcommand vm; and not __fish_seen_subcommand_from create run start stop restart delete rm list ls show inspect ssh logs cp ssh-config port help" -f -a "start" -d 'Start stopped VMs'
complete -c banger -n "__fish_banger_using_subcommand vm; and not __fish_seen_subcommand_from create run start stop restart delete rm list ls show inspect ssh logs cp ssh-config port help" -f -a "stop" -d 'Stop running VMs (Ctrl-Alt-Del, then SIGTERM, then SIGKILL)'
complete -c banger -n "__fish_banger_using_subcommand vm; and not __fish_seen_subcommand_from create run start stop restart delete rm list ls show inspect ssh logs cp ssh-config port help" -f -a "restart" -d 'Stop and start VMs'
complete -c banger -n "__fish_banger_using_subcommand vm; and not __fish_seen_subcommand_from create run start stop restart delete rm list ls show inspect ssh logs cp ssh-config port help" -f -a "delete" -d 'Delete VMs with their disks'
complete -c banger -n "__fish_banger_using_subcommand vm; and not __fish_seen_subcommand_from create run start stop restart delete rm list ls show inspect ssh logs cp ssh-config port help" -f -a "rm" -d 'Delete VMs with their disks'
complete -c banger -n "__fish_banger_using_subcommand vm; and not __fish_seen_subcommand_from create run start stop restart delete rm list ls show inspect ssh logs cp ssh-config port help" -f -a "list" -d 'List VMs'
complete -c banger -n "__fish_banger_using_subcommand vm; and not __fish_seen_subcommand_from create run start stop restart delete rm list ls show inspect ssh logs cp ssh-config port help" -f -a "ls" -d 'List VMs'
complete -c banger -n "__fish_banger_using_subcommand vm; and not __fish_seen_subcommand_from create run start stop restart delete rm list ls show inspect ssh logs cp ssh-config port help" -f -a "show" -d 'Show one VM'
complete -c banger -n "__fish_banger_using_subcommand vm; and not __fish_seen_subcommand_from create run start stop restart delete rm list ls show inspect ssh logs cp ssh-config port help" -f -a "inspect" -d 'Show one VM'
complete -c banger -n "__fish_banger_using_subcommand vm; and not __fish_seen_subcommand_from create run start stop restart delete rm list ls show inspect ssh logs cp ssh-config port help" -f -a "ssh" -d 'Open a shell, or run a command, in a VM over SSH'
complete -c banger -n "__fish_banger_using_subcommand vm; and not __fish_seen_subcommand_from create run start stop restart delete rm list ls show inspect ssh logs cp ssh-config port help" -f -a "logs" -d 'Print a VM\'s console log (or its VMM\'s own log with --vmm)'
complete -c banger -n "__fish_banger_using_subcommand vm; and not __fish_seen_subcommand_from create run start stop restart delete rm list ls show inspect ssh logs cp ssh-config port help" -f -a "cp" -d 'Copy files or trees between the host and a VM (NAME:PATH; `-` is a tar stream)'
complete -c banger -n "__fish_banger_using_subcommand vm; and not __fish_seen_subcommand_from create run start stop restart delete rm list ls show inspect ssh logs cp ssh-config port help" -f -a "ssh-config" -d 'Print OpenSSH `Host` blocks for VMs (for ssh -F, scp, rsync, IDEs)'
complete -c banger -n "__fish_banger_using_subcommand vm; and not __fish_seen_subcommand_from create run start stop restart delete rm list ls show inspect ssh logs cp ssh-config port help" -f -a "port" -d 'List a VM\'s published ports, one a line'
complete -c banger -n "__fish_banger_using_subcommand vm; and not __fish_seen_subcommand_from create run start stop restart delete rm list ls show inspect ssh logs cp ssh-config port help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from create" -l image -d 'Image to boot (default: the default image)' -r
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from create" -l vcpus -d 'Number of vCPUs, 1-32 [default: 2]' -r
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from create" -l memory -d 'Memory in MiB, or a size such as 2G [default: 1024]' -r
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from create" -l disk-size -d 'Root disk size (default: the image\'s rootfs size)' -r
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from create" -l work-size -d 'Work disk size, mounted at /root, at least 64M [default: 8G]' -r
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from create" -l ttl -d 'Delete the VM after this long (`banger gc` enforces it), e.g. 2h' -r
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from create" -s p -l publish -d 'Forward [ADDR:]HOST_PORT:GUEST_PORT[/udp] while it runs (repeatable; ADDR: 127.0.0.1)' -r
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from create" -l vmm -d 'VMM for this VM: auto (Firecracker where it runs guests, else QEMU\'s software CPU), firecracker or qemu [default: the config\'s, auto]' -r
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from create" -l timeout -d 'How long to wait for the guest [default: 5m]' -r
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from create" -l no-nat -d 'Do not give the VM outbound NAT'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from create" -l timings -d 'Print how long each stage took'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from create" -l no-wait -d 'Do not wait for the guest to answer (agent and SSH)'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from create" -l no-start -d 'Create the VM and its disks without starting it'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from create" -l json -d 'Print the VM as JSON'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from create" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from create" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from run" -l name -d 'VM to use: created if missing, started if stopped' -r
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from run" -l image -d 'Image to boot (default: the default image)' -r
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from run" -l vcpus -d 'Number of vCPUs, 1-32 [default: 2]' -r
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from run" -l memory -d 'Memory in MiB, or a size such as 2G [default: 1024]' -r
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from run" -l disk-size -d 'Root disk size (default: the image\'s rootfs size)' -r
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from run" -l work-size -d 'Work disk size, mounted at /root, at least 64M [default: 8G]' -r
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from run" -l ttl -d 'Delete the VM after this long (`banger gc` enforces it), e.g. 2h' -r
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from run" -s p -l publish -d 'Forward [ADDR:]HOST_PORT:GUEST_PORT[/udp] while it runs (repeatable; ADDR: 127.0.0.1)' -r
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from run" -l vmm -d 'VMM for this VM: auto (Firecracker where it runs guests, else QEMU\'s software CPU), firecracker or qemu [default: the config\'s, auto]' -r
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from run" -l timeout -d 'How long to wait for the guest [default: 5m]' -r
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from run" -l copy -d 'Copy into the VM before the command (repeatable)' -r
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from run" -l copy-out -d 'Copy back after the command, whatever its exit code (repeatable)' -r
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from run" -l no-nat -d 'Do not give the VM outbound NAT'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from run" -l timings -d 'Print how long each stage took'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from run" -l rm -d 'Delete the VM afterwards, also when anything fails (only a VM this run created)'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from run" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from run" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from run" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from start" -l timeout -d 'How long to wait for the guest [default: 5m]' -r
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from start" -l no-wait -d 'Do not wait for the guest to answer (agent and SSH)'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from start" -l timings -d 'Print how long each stage took'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from start" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from start" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from start" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from stop" -l timeout -d 'How long the guest gets to shut down before SIGTERM [default: 10s]' -r
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from stop" -l force -d 'Kill at once instead of asking the guest to shut down'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from stop" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from stop" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from stop" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from restart" -l timeout -d 'How long to wait for the guest [default: 5m]' -r
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from restart" -l no-wait -d 'Do not wait for the guest to answer (agent and SSH)'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from restart" -l timings -d 'Print how long each stage took'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from restart" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from restart" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from restart" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from delete" -s f -l force -d 'Kill running VMs at once instead of shutting them down'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from delete" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from delete" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from delete" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from rm" -s f -l force -d 'Kill running VMs at once instead of shutting them down'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from rm" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from rm" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from rm" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from list" -l json -d 'Print JSON'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from list" -s q -l quiet -d 'Print names only'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from list" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from ls" -l json -d 'Print JSON'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from ls" -s q -l quiet -d 'Print names only'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from ls" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from ls" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from ls" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from show" -l json -d 'Print JSON'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from show" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from show" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from inspect" -l json -d 'Print JSON'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from inspect" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from inspect" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from inspect" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from ssh" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from ssh" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from ssh" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from logs" -s f -l follow -d 'Keep printing as the log grows'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from logs" -l vmm -d 'Show the VMM\'s own log instead of the guest console'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from logs" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from logs" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from logs" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from cp" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from cp" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from cp" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from ssh-config" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from ssh-config" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from ssh-config" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from port" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from port" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from port" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from help" -f -a "create" -d 'Create a VM (and start it unless --no-start)'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from help" -f -a "run" -d 'Create or start a VM, wait for it, run a command in it over SSH'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from help" -f -a "start" -d 'Start stopped VMs'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from help" -f -a "stop" -d 'Stop running VMs (Ctrl-Alt-Del, then SIGTERM, then SIGKILL)'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from help" -f -a "restart" -d 'Stop and start VMs'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from help" -f -a "delete" -d 'Delete VMs with their disks'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from help" -f -a "list" -d 'List VMs'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from help" -f -a "show" -d 'Show one VM'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from help" -f -a "ssh" -d 'Open a shell, or run a command, in a VM over SSH'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from help" -f -a "logs" -d 'Print a VM\'s console log (or its VMM\'s own log with --vmm)'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from help" -f -a "cp" -d 'Copy files or trees between the host and a VM (NAME:PATH; `-` is a tar stream)'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from help" -f -a "ssh-config" -d 'Print OpenSSH `Host` blocks for VMs (for ssh -F, scp, rsync, IDEs)'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from help" -f -a "port" -d 'List a VM\'s published ports, one a line'
complete -c banger -n "__fish_banger_using_subcommand vm; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c banger -n "__fish_banger_using_subcommand image; and not __fish_seen_subcommand_from build import commit list ls show inspect delete rm default help" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand image; and not __fish_seen_subcommand_from build import commit list ls show inspect delete rm default help" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand image; and not __fish_seen_subcommand_from build import commit list ls show inspect delete rm default help" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand image; and not __fish_seen_subcommand_from build import commit list ls show inspect delete rm default help" -f -a "build" -d 'Build an image from Debian packages (kernel, rootfs, agent)'
complete -c banger -n "__fish_banger_using_subcommand image; and not __fish_seen_subcommand_from build import commit list ls show inspect delete rm default help" -f -a "import" -d 'Register an existing kernel and rootfs as an image'
complete -c banger -n "__fish_banger_using_subcommand image; and not __fish_seen_subcommand_from build import commit list ls show inspect delete rm default help" -f -a "commit" -d 'Make a stopped VM\'s root disk (and with --with-work its work disk) a new image'
complete -c banger -n "__fish_banger_using_subcommand image; and not __fish_seen_subcommand_from build import commit list ls show inspect delete rm default help" -f -a "list" -d 'List images'
complete -c banger -n "__fish_banger_using_subcommand image; and not __fish_seen_subcommand_from build import commit list ls show inspect delete rm default help" -f -a "ls" -d 'List images'
complete -c banger -n "__fish_banger_using_subcommand image; and not __fish_seen_subcommand_from build import commit list ls show inspect delete rm default help" -f -a "show" -d 'Show one image and its manifest'
complete -c banger -n "__fish_banger_using_subcommand image; and not __fish_seen_subcommand_from build import commit list ls show inspect delete rm default help" -f -a "inspect" -d 'Show one image and its manifest'
complete -c banger -n "__fish_banger_using_subcommand image; and not __fish_seen_subcommand_from build import commit list ls show inspect delete rm default help" -f -a "delete" -d 'Delete an image no VM uses'
complete -c banger -n "__fish_banger_using_subcommand image; and not __fish_seen_subcommand_from build import commit list ls show inspect delete rm default help" -f -a "rm" -d 'Delete an image no VM uses'
complete -c banger -n "__fish_banger_using_subcommand image; and not __fish_seen_subcommand_from build import commit list ls show inspect delete rm default help" -f -a "default" -d 'Make an image the default for new VMs'
complete -c banger -n "__fish_banger_using_subcommand image; and not __fish_seen_subcommand_from build import commit list ls show inspect delete rm default help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from build" -l suite -d 'Debian suite to bootstrap' -r
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from build" -l kernel -d 'Use this uncompressed ELF kernel instead of Debian\'s' -r -F
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from build" -l initrd -d 'Initramfs to use with --kernel' -r -F
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from build" -l size -d 'Root filesystem size (default: content plus headroom)' -r
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from build" -l packages -d 'Extra Debian packages, comma separated' -r
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from build" -l default -d 'Make it the default image'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from build" -l force -d 'Replace an existing image of that name'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from build" -l json -d 'Print the manifest as JSON'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from build" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from build" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from build" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from import" -l kernel -d 'Uncompressed ELF kernel (vmlinux)' -r -F
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from import" -l rootfs -d 'ext4 root filesystem' -r -F
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from import" -l initrd -d 'Initramfs' -r -F
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from import" -l work-seed -d 'ext4 skeleton of /root (made when omitted)' -r -F
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from import" -l default -d 'Make it the default image'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from import" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from import" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from import" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from commit" -l with-work -d 'Make the VM\'s work disk (/root) the new image\'s work seed, shrunk to its content'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from commit" -l default -d 'Make it the default image'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from commit" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from commit" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from commit" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from list" -l json -d 'Print JSON'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from list" -s q -l quiet -d 'Print names only'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from list" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from ls" -l json -d 'Print JSON'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from ls" -s q -l quiet -d 'Print names only'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from ls" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from ls" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from ls" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from show" -l json -d 'Print JSON'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from show" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from show" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from inspect" -l json -d 'Print JSON'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from inspect" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from inspect" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from inspect" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from delete" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from delete" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from delete" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from rm" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from rm" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from rm" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from default" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from default" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from default" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from help" -f -a "build" -d 'Build an image from Debian packages (kernel, rootfs, agent)'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from help" -f -a "import" -d 'Register an existing kernel and rootfs as an image'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from help" -f -a "commit" -d 'Make a stopped VM\'s root disk (and with --with-work its work disk) a new image'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from help" -f -a "list" -d 'List images'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from help" -f -a "show" -d 'Show one image and its manifest'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from help" -f -a "delete" -d 'Delete an image no VM uses'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from help" -f -a "default" -d 'Make an image the default for new VMs'
complete -c banger -n "__fish_banger_using_subcommand image; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c banger -n "__fish_banger_using_subcommand doctor" -l timeout -d 'How long --boot waits for the guest\'s agent' -r
complete -c banger -n "__fish_banger_using_subcommand doctor" -l json -d 'Print JSON'
complete -c banger -n "__fish_banger_using_subcommand doctor" -l boot -d 'Also boot the default image once in a throwaway VM (always deleted)'
complete -c banger -n "__fish_banger_using_subcommand doctor" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand doctor" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand doctor" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand gc" -l dry-run -d 'Say what would be removed, change nothing'
complete -c banger -n "__fish_banger_using_subcommand gc" -l json -d 'Print JSON'
complete -c banger -n "__fish_banger_using_subcommand gc" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand gc" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand gc" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand completions" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand completions" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand completions" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand man" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand man" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand man" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand bench; and not __fish_seen_subcommand_from create help" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand bench; and not __fish_seen_subcommand_from create help" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand bench; and not __fish_seen_subcommand_from create help" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand bench; and not __fish_seen_subcommand_from create help" -f -a "create" -d 'Create and delete VMs, reporting each stage\'s min/median/max'
complete -c banger -n "__fish_banger_using_subcommand bench; and not __fish_seen_subcommand_from create help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c banger -n "__fish_banger_using_subcommand bench; and __fish_seen_subcommand_from create" -l runs -d 'Number of VMs to create and delete' -r
complete -c banger -n "__fish_banger_using_subcommand bench; and __fish_seen_subcommand_from create" -l image -r
complete -c banger -n "__fish_banger_using_subcommand bench; and __fish_seen_subcommand_from create" -l wait -d 'Include waiting for the guest (agent and SSH)'
complete -c banger -n "__fish_banger_using_subcommand bench; and __fish_seen_subcommand_from create" -l json -d 'Print JSON'
complete -c banger -n "__fish_banger_using_subcommand bench; and __fish_seen_subcommand_from create" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand bench; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand bench; and __fish_seen_subcommand_from create" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand bench; and __fish_seen_subcommand_from help" -f -a "create" -d 'Create and delete VMs, reporting each stage\'s min/median/max'
complete -c banger -n "__fish_banger_using_subcommand bench; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c banger -n "__fish_banger_using_subcommand sidecar" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand sidecar" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand sidecar" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand __complete" -s v -l verbose -d 'Say more on stderr (repeat for more)'
complete -c banger -n "__fish_banger_using_subcommand __complete" -s h -l help -d 'Print help'
complete -c banger -n "__fish_banger_using_subcommand __complete" -s V -l version -d 'Print version'
complete -c banger -n "__fish_banger_using_subcommand help; and not __fish_seen_subcommand_from vm image doctor gc completions man bench sidecar __complete help" -f -a "vm" -d 'Create, run and manage VMs'
complete -c banger -n "__fish_banger_using_subcommand help; and not __fish_seen_subcommand_from vm image doctor gc completions man bench sidecar __complete help" -f -a "image" -d 'Build, import and manage images'
complete -c banger -n "__fish_banger_using_subcommand help; and not __fish_seen_subcommand_from vm image doctor gc completions man bench sidecar __complete help" -f -a "doctor" -d 'Check this host for everything banger needs'
complete -c banger -n "__fish_banger_using_subcommand help; and not __fish_seen_subcommand_from vm image doctor gc completions man bench sidecar __complete help" -f -a "gc" -d 'Delete expired VMs and sweep leaked resources (safe from cron)'
complete -c banger -n "__fish_banger_using_subcommand help; and not __fish_seen_subcommand_from vm image doctor gc completions man bench sidecar __complete help" -f -a "completions" -d 'Print a shell completion script'
complete -c banger -n "__fish_banger_using_subcommand help; and not __fish_seen_subcommand_from vm image doctor gc completions man bench sidecar __complete help" -f -a "man" -d 'Print the man page (roff)'
complete -c banger -n "__fish_banger_using_subcommand help; and not __fish_seen_subcommand_from vm image doctor gc completions man bench sidecar __complete help" -f -a "bench" -d 'Measure VM creation'
complete -c banger -n "__fish_banger_using_subcommand help; and not __fish_seen_subcommand_from vm image doctor gc completions man bench sidecar __complete help" -f -a "sidecar" -d 'Internal: DNS and TAP-pool sidecar (started automatically)'
complete -c banger -n "__fish_banger_using_subcommand help; and not __fish_seen_subcommand_from vm image doctor gc completions man bench sidecar __complete help" -f -a "__complete" -d 'Internal: list names for shell completion'
complete -c banger -n "__fish_banger_using_subcommand help; and not __fish_seen_subcommand_from vm image doctor gc completions man bench sidecar __complete help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c banger -n "__fish_banger_using_subcommand help; and __fish_seen_subcommand_from vm" -f -a "create" -d 'Create a VM (and start it unless --no-start)'
complete -c banger -n "__fish_banger_using_subcommand help; and __fish_seen_subcommand_from vm" -f -a "run" -d 'Create or start a VM, wait for it, run a command in it over SSH'
complete -c banger -n "__fish_banger_using_subcommand help; and __fish_seen_subcommand_from vm" -f -a "start" -d 'Start stopped VMs'
complete -c banger -n "__fish_banger_using_subcommand help; and __fish_seen_subcommand_from vm" -f -a "stop" -d 'Stop running VMs (Ctrl-Alt-Del, then SIGTERM, then SIGKILL)'
complete -c banger -n "__fish_banger_using_subcommand help; and __fish_seen_subcommand_from vm" -f -a "restart" -d 'Stop and start VMs'
complete -c banger -n "__fish_banger_using_subcommand help; and __fish_seen_subcommand_from vm" -f -a "delete" -d 'Delete VMs with their disks'
complete -c banger -n "__fish_banger_using_subcommand help; and __fish_seen_subcommand_from vm" -f -a "list" -d 'List VMs'
complete -c banger -n "__fish_banger_using_subcommand help; and __fish_seen_subcommand_from vm" -f -a "show" -d 'Show one VM'
complete -c banger -n "__fish_banger_using_subcommand help; and __fish_seen_subcommand_from vm" -f -a "ssh" -d 'Open a shell, or run a command, in a VM over SSH'
complete -c banger -n "__fish_banger_using_subcommand help; and __fish_seen_subcommand_from vm" -f -a "logs" -d 'Print a VM\'s console log (or its VMM\'s own log with --vmm)'
complete -c banger -n "__fish_banger_using_subcommand help; and __fish_seen_subcommand_from vm" -f -a "cp" -d 'Copy files or trees between the host and a VM (NAME:PATH; `-` is a tar stream)'
complete -c banger -n "__fish_banger_using_subcommand help; and __fish_seen_subcommand_from vm" -f -a "ssh-config" -d 'Print OpenSSH `Host` blocks for VMs (for ssh -F, scp, rsync, IDEs)'
complete -c banger -n "__fish_banger_using_subcommand help; and __fish_seen_subcommand_from vm" -f -a "port" -d 'List a VM\'s published ports, one a line'
complete -c banger -n "__fish_banger_using_subcommand help; and __fish_seen_subcommand_from image" -f -a "build" -d 'Build an image from Debian packages (kernel, rootfs, agent)'
complete -c banger -n "__fish_banger_using_subcommand help; and __fish_seen_subcommand_from image" -f -a "import" -d 'Register an existing kernel and rootfs as an image'
complete -c banger -n "__fish_banger_using_subcommand help; and __fish_seen_subcommand_from image" -f -a "commit" -d 'Make a stopped VM\'s root disk (and with --with-work its work disk) a new image'
complete -c banger -n "__fish_banger_using_subcommand help; and __fish_seen_subcommand_from image" -f -a "list" -d 'List images'
complete -c banger -n "__fish_banger_using_subcommand help; and __fish_seen_subcommand_from image" -f -a "show" -d 'Show one image and its manifest'
complete -c banger -n "__fish_banger_using_subcommand help; and __fish_seen_subcommand_from image" -f -a "delete" -d 'Delete an image no VM uses'
complete -c banger -n "__fish_banger_using_subcommand help; and __fish_seen_subcommand_from image" -f -a "default" -d 'Make an image the default for new VMs'
complete -c banger -n "__fish_banger_using_subcommand help; and __fish_seen_subcommand_from bench" -f -a "create" -d 'Create and delete VMs, reporting each stage\'s min/median/max'

# Names of VMs and images, completed from banger's database.
complete -c banger -n '__fish_seen_subcommand_from vm; and __fish_seen_subcommand_from start stop restart delete rm show inspect ssh logs' -f -a '(banger __complete vm 2>/dev/null)'
complete -c banger -n '__fish_seen_subcommand_from image; and __fish_seen_subcommand_from show inspect delete rm default' -f -a '(banger __complete image 2>/dev/null)'
