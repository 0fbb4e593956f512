"""A recording stand-in for :class:`carphooks.runner.Runner` and a tiny FreeBSD model.

:class:`FakeRunner` has the runner's interface (``run``, ``dry_run``, ``echo``,
``count``, ``which``) and answers in-process: from canned results per
exact argv, or from :class:`FakeFreeBSD`. Every call is recorded (argv, stdin,
mutating, whether it ran). A command nobody answers raises :class:`NotModelled`, so a
test never passes on a silently swallowed command.

:class:`FakeFreeBSD` keeps each interface as the text ``ifconfig IF`` prints (seeded
from ``tests/fixtures/ifconfig/*.txt`` or built in the 14.x layout) and edits those
lines for the few commands carphooks issues: ``inet|inet6 A/P [vhid ...] alias``,
``inet|inet6 A -alias``, ``vhid N advbase B advskew S [peer ...]``, ``ether MAC``,
``up``; plus ``sysctl -n NAME`` and the additive ``net.inet.carp.demotion=N``. The
full emulator (tests/fakebsd) stays the end-to-end proof; this one is for unit tests.
FreeBSD behaviour modelled here (sources as cited in tests/fakebsd/README.md):

- a missing interface: ``ifconfig: interface IF does not exist``, exit 1
  (sbin/ifconfig/ifconfig.c);
- ``ifconfig -a``: every interface in turn, each as ``ifconfig IF`` prints it
  (ifconfig.c ``main``, ``list_interfaces``; ifconfig_netlink.c ``list_interfaces_nl``);
- ``-alias`` of an absent address: ``ifconfig: ioctl (SIOCDIFADDR): Can't assign
  requested address``, exit 1 (ifconfig.c ``delifaddr``; netinet/in.c
  ``in_difaddr_ioctl``);
- an IPv4 add of an address already there is a delete + add (in.c
  ``in_aifaddr_ioctl``); an IPv6 add of an existing address updates it in place and
  clears ``duplicated``/``tentative`` (netinet6/in6.c ``in6_update_ifa_internal``); a
  prefix change of an existing IPv6 address is EINVAL (in6.c ``in6_validate_ifra``);
- output lines ``inet A netmask 0xMASK[ broadcast B][ vhid N]`` and
  ``inet6 A prefixlen P[ vhid N]`` (af_inet.c ``in_status_nl``, af_inet6.c
  ``in6_status_nl``); ``carp: STATE vhid N advbase B advskew S`` and on 14+ the
  ``peer A peer6 B`` line (sbin/ifconfig/carp.c ``carp_status``);
- 14.x: a vhid command without ``peer``/``peer6`` sets multicast (carp.c
  ``carp_ctor``); 13.x has no ``peer``/``mcast`` words (``WORD: bad value``);
- ``sysctl -n``: the value; an unknown oid ``sysctl: unknown oid 'NAME'``, exit 1;
  ``net.inet.carp.demotion=N`` adds N (netinet/ip_carp.c ``carp_demote_adj``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from carphooks.errors import CommandError
from carphooks.runner import Result, Runner, redact

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ifconfig"
MCAST4 = "224.0.0.18"
MCAST6 = "ff02::12"
CARP_WORDS = ("vhid", "advbase", "advskew", "pass", "peer", "peer6")


class NotModelled(AssertionError):
    """A command neither a canned answer nor the model knows: the test is incomplete."""


@dataclass(frozen=True)
class Call:
    """One ``run`` call as the code under test made it."""

    argv: tuple[str, ...]
    mutating: bool
    stdin: str | None
    ran: bool  # False: a mutating command in a dry run (echoed, not run)


class FakeRunner(Runner):
    """Answers ``run`` in-process and records every call; nothing is executed."""

    def __init__(self, bsd: FakeFreeBSD | None = None, *, dry_run: bool = False,
                 echo: Callable[[str], None] | None = None) -> None:
        self.echoed: list[str] = []
        super().__init__(dry_run=dry_run, echo=echo or self.echoed.append)
        self.bsd = bsd
        self.calls: list[Call] = []
        self._canned: dict[tuple[str, ...], Result] = {}

    def answer(self, argv: Sequence[str], stdout: str = "", stderr: str = "",
               returncode: int = 0) -> None:
        """Answer every later call of exactly ``argv`` so (replaces an earlier answer)."""
        key = tuple(argv)
        self._canned[key] = Result(key, returncode, stdout, stderr)

    def which(self, program: str) -> str | None:
        known = {argv[0] for argv in self._canned}
        if self.bsd is not None:
            known |= {"ifconfig", "sysctl"}
        return f"/sbin/{program}" if program in known else None

    def run(self, argv: Sequence[str], *, mutating: bool, stdin: str | None = None,
            check: bool = True, timeout: float | None = None) -> Result:
        args = tuple(str(a) for a in argv)
        if mutating and self.dry_run:
            self.calls.append(Call(args, mutating, stdin, ran=False))
            shown = " ".join(redact(args))
            self.echo(shown if stdin is None else f"{shown} <<EOF\n{stdin}EOF")
            return Result(args, 0, "", "")
        self.calls.append(Call(args, mutating, stdin, ran=True))
        self.count += 1
        result = self._answer(args, stdin)
        if check and result.returncode != 0:
            raise CommandError(redact(args), result.returncode, result.stderr or result.stdout)
        return result

    def _answer(self, args: tuple[str, ...], stdin: str | None) -> Result:
        if args in self._canned:
            return self._canned[args]
        if self.bsd is not None and args[0] in ("ifconfig", "sysctl"):
            return self.bsd.run(args)
        raise NotModelled(f"no answer for {list(args)} (stdin {stdin!r})")

    # -- what the tests look at ---------------------------------------------------------
    def commands(self) -> list[list[str]]:
        """Every command run, in order."""
        return [list(c.argv) for c in self.calls if c.ran]

    def mutations(self) -> list[list[str]]:
        """The mutating commands run, in order."""
        return [list(c.argv) for c in self.calls if c.ran and c.mutating]

    def asked_to_mutate(self) -> list[list[str]]:
        """Every mutating command asked for (run or, in a dry run, echoed)."""
        return [list(c.argv) for c in self.calls if c.mutating]


def _ip(token: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(token.split("%", 1)[0])


def _word_after(tokens: Sequence[str], word: str) -> str | None:
    for i, tok in enumerate(tokens[:-1]):
        if tok == word:
            return tokens[i + 1]
    return None


@dataclass
class FakeFreeBSD:
    """Interfaces as ``ifconfig IF`` text, edited by the commands carphooks runs."""

    release: str = "14.1"
    ifaces: dict[str, list[str]] = field(default_factory=dict)
    sysctls: dict[str, int | str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        defaults: dict[str, int | str] = {
            "kern.osrelease": f"{self.release}-RELEASE", "net.inet.carp.demotion": 0,
            "net.inet.carp.preempt": 1, "net.inet.carp.allow": 1,
            "net.inet6.ip6.forwarding": 0}
        self.sysctls = {**defaults, **self.sysctls}

    @property
    def major(self) -> int:
        return int(self.release.split(".")[0])

    # -- set-up ---------------------------------------------------------------------
    def load(self, fixture: str) -> FakeFreeBSD:
        """Take every interface of ``tests/fixtures/ifconfig/FIXTURE.txt`` verbatim."""
        name = None
        for line in (FIXTURES / f"{fixture}.txt").read_text().splitlines():
            if line and not line[0].isspace():
                name = line.split(":", 1)[0]
                self.ifaces[name] = []
            assert name is not None, "fixture starts with a status line"
            self.ifaces[name].append(line)
        return self

    def add_interface(self, name: str, mac: str, *, up: bool = True, tap: bool = False,
                      addresses: Sequence[str] = ()) -> FakeFreeBSD:
        """A vtnet (or tap) interface in the 14.x layout, with plain addresses."""
        flags = ["BROADCAST", "RUNNING", "SIMPLEX", "MULTICAST"]
        bits = 0x8842
        if up:
            flags.insert(0, "UP")
            bits |= 0x1
        if self.major >= 14:
            flags.append("LOWER_UP")
            bits |= 0x1000000
        self.ifaces[name] = [
            f"{name}: flags={bits:x}<{','.join(flags)}> metric 0 mtu 1500",
            "\toptions=80000<LINKSTATE>" if tap else
            "\toptions=80028<VLAN_MTU,JUMBO_MTU,LINKSTATE>",
            f"\tether {mac}",
            "\tmedia: Ethernet autoselect" if tap else
            "\tmedia: Ethernet autoselect (10Gbase-T <full-duplex>)",
            "\tstatus: active",
            "\tnd6 options=21<PERFORMNUD,AUTO_LINKLOCAL>",
        ]
        if tap:
            self.ifaces[name].insert(3, "\tgroups: tap")  # before media (14.x order)
        for text in addresses:
            self._add(name, ipaddress.ip_interface(text), None)
        return self

    def add_vhid(self, ifname: str, vhid: int, address: str, state: str = "BACKUP",
                 advbase: int = 1, advskew: int = 0) -> FakeFreeBSD:
        """A configured vhid (its address and its carp: line)."""
        self._add(ifname, ipaddress.ip_interface(address), vhid)
        self._set_carp(ifname, vhid, advbase, advskew, MCAST4, MCAST6, state=state)
        return self

    def set_flag(self, ifname: str, address: str, flag: str) -> None:
        """Mark an inet6 address (``tentative``, ``duplicated``) as the kernel would."""
        lines = self.ifaces[ifname]
        i = self._find(ifname, ipaddress.ip_address(address))
        assert i is not None
        tokens = lines[i].split()
        at = tokens.index("prefixlen") + 2
        lines[i] = "\t" + " ".join([*tokens[:at], flag, *tokens[at:]])

    def set_carp_state(self, ifname: str, vhid: int, state: str) -> None:
        lines = self.ifaces[ifname]
        i = self._carp(ifname, vhid)
        assert i is not None
        tokens = lines[i].split()
        lines[i] = "\t" + " ".join([tokens[0], state, *tokens[2:]])

    # -- what the tests look at ------------------------------------------------------
    def text(self, ifname: str) -> str:
        return "\n".join(self.ifaces[ifname]) + "\n"

    def addresses(self, ifname: str) -> set[str]:
        """``A/P`` of every address line (vhid addresses included)."""
        out = set()
        for line in self.ifaces[ifname]:
            tokens = line.split()
            if tokens[0] == "inet":
                mask = int(tokens[tokens.index("netmask") + 1], 16)
                out.add(f"{_ip(tokens[1])}/{bin(mask).count('1')}")
            elif tokens[0] == "inet6":
                out.add(f"{_ip(tokens[1])}/{tokens[tokens.index('prefixlen') + 1]}")
        return out

    # -- commands --------------------------------------------------------------------
    def run(self, args: tuple[str, ...]) -> Result:
        try:
            out = self._sysctl(args[1:]) if args[0] == "sysctl" else self._ifconfig(args[1:])
        except _Fail as exc:
            return Result(args, exc.rc, "", exc.text + "\n")
        return Result(args, 0, out, "")

    def _sysctl(self, words: tuple[str, ...]) -> str:
        if len(words) == 2 and words[0] == "-n":
            if words[1] not in self.sysctls:
                raise _Fail(f"sysctl: unknown oid '{words[1]}'")
            return f"{self.sysctls[words[1]]}\n"
        if len(words) == 1 and "=" in words[0]:
            name, _, value = words[0].partition("=")
            if name not in self.sysctls:
                raise _Fail(f"sysctl: unknown oid '{name}'")
            old = self.sysctls[name]
            if name == "net.inet.carp.demotion":  # carp_demote_adj(): additive
                self.sysctls[name] = int(old) + int(value)
            else:
                self.sysctls[name] = int(value)
            return f"{name}: {old} -> {self.sysctls[name]}\n"
        raise NotModelled(f"sysctl {list(words)}")

    def _ifconfig(self, words: tuple[str, ...]) -> str:
        if not words:
            raise NotModelled("ifconfig without arguments")
        if words == ("-a",):  # every interface, each as ``ifconfig IF`` prints it
            return "".join(self.text(name) for name in self.ifaces)
        ifname, rest = words[0], list(words[1:])
        if ifname not in self.ifaces:
            raise _Fail(f"ifconfig: interface {ifname} does not exist")
        if not rest:
            return self.text(ifname)
        if rest == ["up"]:
            self._up(ifname)
        elif len(rest) == 2 and rest[0] == "ether":
            self.ifaces[ifname] = [f"\tether {rest[1]}" if line.split()[0] == "ether"
                                   else line for line in self.ifaces[ifname]]
        elif rest[0] == "vhid":
            self._carp_command(ifname, rest)
        elif rest[0] in ("inet", "inet6") and rest[-1] in ("alias", "-alias"):
            self._alias(ifname, rest)
        else:
            raise NotModelled(f"ifconfig {list(words)}")
        return ""

    def _carp_words(self, words: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        i = 0
        while i < len(words):
            word = words[i]
            if word in ("mcast", "mcast6") and self.major >= 14:
                out["peer" if word == "mcast" else "peer6"] = MCAST4 if word == "mcast" \
                    else MCAST6
                i += 1
            elif word in CARP_WORDS and (self.major >= 14 or word not in ("peer", "peer6")):
                out[word] = words[i + 1]
                i += 2
            else:
                raise _Fail(f"ifconfig: {word}: bad value")
        return out

    def _carp_command(self, ifname: str, words: list[str]) -> None:
        kv = self._carp_words(words)
        vhid = int(kv["vhid"])
        i = self._carp(ifname, vhid)
        old = self.ifaces[ifname][i].split() if i is not None else []
        self._set_carp(ifname, vhid, int(kv.get("advbase") or _word_after(old, "advbase") or 1),
                       int(kv.get("advskew") or _word_after(old, "advskew") or 0),
                       kv.get("peer", MCAST4), kv.get("peer6", MCAST6))

    def _alias(self, ifname: str, words: list[str]) -> None:
        family, text, alias = words[0], words[1], words[-1]
        kv = self._carp_words(words[2:-1])
        if alias == "-alias":
            if kv:
                raise NotModelled(f"-alias with {kv}")
            i = self._find(ifname, ipaddress.ip_interface(text).ip)
            if i is None:
                raise _Fail("ifconfig: ioctl (SIOCDIFADDR): Can't assign requested address")
            del self.ifaces[ifname][i]
            return
        address = ipaddress.ip_interface(text)
        if (address.version == 6) != (family == "inet6"):
            raise NotModelled(f"{family} {text}")
        vhid = int(kv["vhid"]) if "vhid" in kv else None
        if vhid is not None:
            self._set_carp(ifname, vhid, int(kv.get("advbase", 1)), int(kv.get("advskew", 0)),
                           kv.get("peer", MCAST4), kv.get("peer6", MCAST6))
        self._add(ifname, address, vhid)

    # -- line edits ------------------------------------------------------------------
    def _find(self, ifname: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
              ) -> int | None:
        for i, line in enumerate(self.ifaces[ifname]):
            tokens = line.split()
            if tokens[0] in ("inet", "inet6") and _ip(tokens[1]) == ip:
                return i
        return None

    def _carp(self, ifname: str, vhid: int) -> int | None:
        for i, line in enumerate(self.ifaces[ifname]):
            tokens = line.split()
            if tokens[0] == "carp:" and _word_after(tokens, "vhid") == str(vhid):
                return i
        return None

    def _broadcast(self, ifname: str) -> bool:
        return "BROADCAST" in self.ifaces[ifname][0].split("<", 1)[1].split(">", 1)[0]

    def _add(self, ifname: str, address: ipaddress.IPv4Interface | ipaddress.IPv6Interface,
             vhid: int | None) -> None:
        lines = self.ifaces[ifname]
        i = self._find(ifname, address.ip)
        if i is not None:
            old = lines[i].split()
            if address.version == 6:
                if old[old.index("prefixlen") + 1] != str(address.network.prefixlen):
                    raise _Fail("ifconfig: ioctl (SIOCAIFADDR): Invalid argument")
                del lines[i]  # updated in place below: flags cleared
            else:
                del lines[i]  # in_aifaddr_ioctl(): delete, then add again
        if address.version == 4:
            plen = address.network.prefixlen
            line = f"\tinet {address.ip} netmask 0x{int(address.netmask):x}"
            if self._broadcast(ifname) and plen:
                line += f" broadcast {address.network.broadcast_address}"
        else:
            line = f"\tinet6 {address.ip} prefixlen {address.network.prefixlen}"
        if vhid is not None:
            line += f" vhid {vhid}"
        if i is not None and address.version == 6:
            lines.insert(i, line)
            return
        lines.insert(self._slot(ifname, address.version), line)

    def _slot(self, ifname: str, version: int) -> int:
        """Where a new address line goes: after the last of its family (IPv4 before
        IPv6), else after the ether/options lines."""
        lines = self.ifaces[ifname]
        order = ["inet", "inet6"] if version == 6 else ["inet"]
        for fam in order[::-1] if version == 6 else order:
            last = [i for i, line in enumerate(lines) if line.split()[0] == fam]
            if last:
                return last[-1] + 1
        head = [i for i, line in enumerate(lines)
                if i == 0 or line.split()[0] in ("ether", "hwaddr", "description:")
                or line.split()[0].startswith("options=")]
        return head[-1] + 1

    def _set_carp(self, ifname: str, vhid: int, advbase: int, advskew: int, peer: str,
                  peer6: str, state: str | None = None) -> None:
        lines = self.ifaces[ifname]
        i = self._carp(ifname, vhid)
        if state is None:
            state = lines[i].split()[1] if i is not None else (
                "BACKUP" if "UP" in lines[0].split("<", 1)[1].split(">")[0].split(",")
                else "INIT")
        new = [f"\tcarp: {state} vhid {vhid} advbase {advbase} advskew {advskew}"]
        if self.major >= 14:
            new.append(f"\t      peer {peer} peer6 {peer6}")
        if i is not None:
            end = i + 2 if self.major >= 14 and i + 1 < len(lines) and \
                lines[i + 1].split()[0] == "peer" else i + 1
            lines[i:end] = new
            return
        addrs = [j for j, line in enumerate(lines) if line.split()[0] in ("inet", "inet6")
                 or line.split()[0] in ("carp:", "peer")]
        at = addrs[-1] + 1 if addrs else self._slot(ifname, 4)
        lines[at:at] = new

    def _up(self, ifname: str) -> None:
        head = self.ifaces[ifname][0]
        name, rest = head.split(": flags=", 1)
        bits_text, rest = rest.split("<", 1)
        names, tail = rest.split(">", 1)
        if "UP" in names.split(","):
            return
        bits = int(bits_text, 16) | 0x1  # IFF_UP is bit 0: printed first (printb)
        flags = ",".join(["UP", *filter(None, names.split(","))])
        self.ifaces[ifname][0] = f"{name}: flags={bits:x}<{flags}>{tail}"


class _Fail(Exception):
    def __init__(self, text: str, rc: int = 1) -> None:
        super().__init__(text)
        self.text = text
        self.rc = rc
