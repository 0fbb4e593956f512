"""The shipped devd rule, applied with devd's own semantics to real event lines.

devd (freebsd-facts §1.5): regexes are POSIX extended, anchored and
case-insensitive; rules are tried from the highest priority down and only the
first match runs.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from setupkit import CONFIG_PATH, RENDER_BINDIR, first_match, target, write_cluster

from carphooks import config as configmod
from carphooks.setup import check, devd, render

OURS = "/usr/local/etc/devd/carphooks.conf"

# Roughly what a FreeBSD 14 /etc/devd.conf holds: options with `set`, IFNET rules
# with media-type, attach rules using a set variable, and no active CARP rule.
STOCK = r"""
# $FreeBSD$
options {
	directory "/etc/devd";
	directory "/usr/local/etc/devd";
	pid-file "/var/run/devd.pid";
	set scsi-controller-regex
		"(aac|adv|adw|aha|ahb|ahc|ahd|aic|amr|bt|ciss|dpt|\
		esp|ida|iir|ips|isp|mlx|mly|mpr|mps|mpt|ncr|ncv|nsp|stg|sym|\
		trm)\
		[0-9]+";
	set wifi-driver-regex
		"(ath|bwi|bwn|ipw|iwlwifi|iwi|iwm|iwn|malo|mwl|otus|ral|rsu|rtw|rtwn|rum|run|\
		uath|upgt|ural|urtw|wpi|wtap|zyd)[0-9]+";
};

# Wireless NIC attach.
attach 0 {
	device-name "$wifi-driver-regex";
	action "/etc/pccard_ether $device-name start";
};

notify 0 {
	match "system"		"IFNET";
	match "type"		"LINK_UP";
	media-type		"ethernet";
	action "service dhclient quietstart $subsystem";
};

notify 0 {
	match "system"		"IFNET";
	match "subsystem"	"!(usbus|wlan)[0-9]+";
	match "type"		"ATTACH";
	action "/etc/pccard_ether $subsystem start";
};

detach 100 {
	device-name "ed50";
};

nomatch 0 {
#	action "logger Unknown device: $pnpinfo $location $bus";
};

nomatch 10 {
	match "bus" "uhub[0-9]+";
	action "logger Unknown USB device: vendor $vendor \
		bus $bus";
};

/* C comment */ // and a C++ one
notify 100 {
	match "system" "DEVFS";
	match "subsystem" "CDEV";
	match "type" "CREATE";
	match "cdev" "!ttyv.*";
	action "echo $cdev";
};

/* Examples, disabled: "quotes", # hashes and { braces } inside a comment
notify 10 {
	match "system" "CARP";
	action "/never";
};
*/
"""

PFSENSE = """
notify 100 {
	match "system"          "CARP";
	match "subsystem"       "[0-9]+@[0-9a-z]+";
	match "type"            "(MASTER|BACKUP)";
	action "/usr/local/sbin/pfSctl -c 'interface carpmaster $subsystem'";
};
"""

OPNSENSE = """
notify 101 {
	match "system"		"CARP";
	match "subsystem"	"[0-9]+@[0-9a-z_.]+";
	match "type"		"(MASTER|BACKUP|INIT)";
	action "/usr/local/etc/rc.syshook carp $subsystem $type";
};
"""

MATCHING = [
    "!system=CARP subsystem=220@lagg0_vlan220 type=INIT",
    "!system=CARP subsystem=220@lagg0_vlan220 type=MASTER",
    "!system=CARP subsystem=1@vtnet0.100 type=BACKUP",
    "!system=CARP subsystem=1@vtnet0 type=MASTER",
    "!system=CARP subsystem=1@tap0 type=BACKUP",
    "!system=CARP subsystem=255@tap0 type=INIT",
    "!system=CARP subsystem=10@igb0 type=master",  # REG_ICASE
    "!system=carp subsystem=10@IGB0 type=Backup",
]

NOT_MATCHING = [
    "!system=IFNET subsystem=vtnet0 type=LINK_UP",
    "!system=IFNET subsystem=tap0 type=LINK_DOWN",
    "!system=CARP subsystem=1@tap0 type=LINK_UP",
    "!system=CARP subsystem=1@tap0 type=MASTERX",  # anchored: no prefix match
    "!system=CARP subsystem=1@tap0 type=XMASTER",
    "!system=CARP subsystem=1@tap0 type=",
    "!system=CARP subsystem=1@tap0",
    "!system=CARP subsystem=tap0 type=MASTER",  # no vhid
    "!system=CARP subsystem=@tap0 type=MASTER",
    "!system=CARP subsystem=1@ type=MASTER",
    "!system=CARP subsystem=x1@tap0 type=MASTER",
    "!system=CARP subsystem=1@tap-0 type=MASTER",
    "!system=CARPX subsystem=1@tap0 type=MASTER",
    "!system=VRRP subsystem=1@tap0 type=MASTER",
    "+carp0 at  on vtnet0",  # attach event, not notify
    "?system=CARP subsystem=1@tap0 type=MASTER",  # nomatch event
]


@pytest.fixture(scope="module")
def rule_text(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = write_cluster(tmp_path_factory.mktemp("cfg") / "carphooks.toml")
    tgt = target(configmod.load(path), "hA")
    return render.render(tgt, "devd").text


@pytest.fixture(scope="module")
def ours(rule_text: str) -> devd.DevdConfig:
    return devd.parse(rule_text, OURS)


def test_rendered_rule_shape(ours: devd.DevdConfig) -> None:
    assert len(ours.rules) == 1
    rule = ours.rules[0]
    assert rule.kind == "notify"
    assert rule.priority == 200
    assert [(m.variable, m.regex) for m in rule.matches] == [
        ("system", "CARP"), ("subsystem", "[0-9]+@[0-9a-z_.]+"),
        ("type", "(MASTER|BACKUP|INIT)")]
    assert rule.actions == (f"{RENDER_BINDIR}/carp-event --config {CONFIG_PATH} $subsystem $type",)


def test_template_comments_state_priority_and_restart() -> None:
    text = render.template_text(render.KINDS["devd"])
    assert "highest-priority" in text
    assert "service devd restart" in text
    assert "UNQUOTED" in text


@pytest.mark.parametrize("line", MATCHING)
def test_rule_matches_carp_events(ours: devd.DevdConfig, line: str) -> None:
    event = devd.parse_event(line)
    assert first_match(ours, event) is ours.rules[0]


@pytest.mark.parametrize("line", NOT_MATCHING)
def test_rule_ignores_everything_else(ours: devd.DevdConfig, line: str) -> None:
    assert first_match(ours, devd.parse_event(line)) is None


@pytest.mark.parametrize("type_", ["MASTER", "BACKUP", "INIT"])
def test_all_three_types_match(ours: devd.DevdConfig, type_: str) -> None:
    assert first_match(ours, devd.carp_event("220@lagg0_vlan220", type_)) is not None


@pytest.mark.parametrize("quote", [True, False], ids=["quoting-devd", "old-devd"])
def test_action_passes_subsystem_and_type_as_two_arguments(ours: devd.DevdConfig,
                                                           quote: bool) -> None:
    event = devd.parse_event("!system=CARP subsystem=220@lagg0_vlan220 type=INIT")
    argv = devd.action_argv(ours.rules[0].actions[0], event, quote=quote)
    assert argv == [f"{RENDER_BINDIR}/carp-event", "--config", str(CONFIG_PATH),
                    "220@lagg0_vlan220", "INIT"]


def test_action_expansion_rules() -> None:
    event = devd.parse_event("!system=CARP subsystem=1@tap0 type=MASTER")
    assert devd.expand_action("x $$HOME ${PATH} $(date) $nosuch.", event, quote=False) == \
        "x $HOME ${PATH} $(date) ."
    assert devd.expand_action("$*", event, quote=False) == event.line
    assert devd.expand_action("$_", event, quote=False) == event.line[1:]
    assert devd.expand_action("/x $type", event) == "/x MASTER"


def _tree(tmp_path: Path, files: dict[str, str], rule_text: str) -> Path:
    root = tmp_path / "root"
    for rel, text in {**files, OURS: rule_text}.items():
        path = root / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_ours_outranks_stock_pfsense_and_opnsense(tmp_path: Path, rule_text: str) -> None:
    root = _tree(tmp_path, {"/etc/devd.conf": STOCK, "/etc/devd/pfsense.conf": PFSENSE,
                            "/usr/local/etc/devd/opnsense.conf": OPNSENSE}, rule_text)
    tree = devd.load_tree(root)
    assert tree.files[0] == "/etc/devd.conf"
    for line in MATCHING:
        winner = first_match(tree, devd.parse_event(line))
        assert winner is not None and winner.source == OURS, line
    # the others still match (they are shadowed, which is the point of priorities)
    shadowed = tree.all_matches(devd.carp_event("1@vtnet0", "MASTER"))
    assert [r.priority for r in shadowed] == [200, 101, 100]
    # non-CARP events go to the stock rules, never to ours
    link = first_match(tree, devd.parse_event("!system=IFNET subsystem=vtnet0 type=ATTACH"))
    assert link is not None and link.source == "/etc/devd.conf"
    assert first_match(tree, devd.parse_event("!system=IFNET subsystem=vtnet0 type=LINK_UP")) \
        is None  # media-type does not hold without an interface database


def test_set_variables_and_negation(tmp_path: Path, rule_text: str) -> None:
    tree = devd.load_tree(_tree(tmp_path, {"/etc/devd.conf": STOCK}, rule_text))
    assert [r.kind for r in tree.rules].count("nomatch") == 2
    usb = devd.parse_event("?bus=uhub0 vendor=0x1 product=0x2")
    rule = first_match(tree, usb)
    assert rule is not None and rule.actions == (
        "logger Unknown USB device: vendor $vendor bus $bus",)
    assert first_match(tree, devd.parse_event("!system=IFNET subsystem=usbus0 type=ATTACH")) \
        is None
    assert first_match(tree, devd.parse_event("!system=IFNET subsystem=em0 type=ATTACH")) \
        is not None
    assert tree.sets["wifi-driver-regex"].startswith("(ath|")
    cdev = devd.parse_event("!system=DEVFS subsystem=CDEV type=CREATE cdev=ttyv0")
    assert first_match(tree, cdev) is None  # "!ttyv.*" negated
    other = devd.parse_event("!system=DEVFS subsystem=CDEV type=CREATE cdev=da0")
    assert first_match(tree, other) is not None


def test_higher_priority_rule_shadows_ours_for_what_it_matches(tmp_path: Path,
                                                               rule_text: str) -> None:
    greedy = ('notify 300 {\n\tmatch "system" "CARP";\n\tmatch "type" "MASTER";\n'
              '\taction "/usr/local/sbin/other";\n};\n')
    tree = devd.load_tree(_tree(tmp_path, {"/etc/devd/greedy.conf": greedy}, rule_text))
    master = first_match(tree, devd.carp_event("1@tap0", "MASTER"))
    backup = first_match(tree, devd.carp_event("1@tap0", "BACKUP"))
    assert master is not None and master.source == "/etc/devd/greedy.conf"
    assert backup is not None and backup.source == OURS


def test_equal_priority_earlier_file_wins(tmp_path: Path, rule_text: str) -> None:
    tie = OPNSENSE.replace("notify 101", "notify 200")
    tree = devd.load_tree(_tree(tmp_path, {"/etc/devd/tie.conf": tie}, rule_text))
    winner = first_match(tree, devd.carp_event("1@tap0", "INIT"))
    assert winner is not None and winner.source == "/etc/devd/tie.conf"


def test_lower_priority_and_non_conf_files_do_not_shadow(tmp_path: Path,
                                                         rule_text: str) -> None:
    low = OPNSENSE.replace("notify 101", "notify 199")
    files = {"/usr/local/etc/devd/low.conf": low,
             # backups and disabled files are not read by devd (only *.conf)
             "/usr/local/etc/devd/carphooks.conf.carphooks-bak": tie_rule(900),
             "/usr/local/etc/devd/old.conf.disabled": tie_rule(900)}
    tree = devd.load_tree(_tree(tmp_path, files, rule_text))
    winner = first_match(tree, devd.carp_event("7@vtnet0.100", "BACKUP"))
    assert winner is not None and winner.source == OURS


def tie_rule(priority: int) -> str:
    return (f'notify {priority} {{\n\tmatch "system" "CARP";\n'
            '\taction "/bin/true";\n};\n')


def test_posix_classes_and_brackets() -> None:
    cfg = devd.parse('notify 5 { match "subsystem" "[[:digit:]]+@[[:alnum:]_.]+"; '
                     'match "x" "a[]b]c"; action "x"; };')
    event = devd.parse_event("!subsystem=12@lagg0_vlan.2 x=a]c")
    assert first_match(cfg, event) is not None
    assert first_match(cfg, devd.parse_event("!subsystem=1a@x x=a]c")) is None


@pytest.mark.parametrize("bad", [
    'notify 1 { match "system" "CARP" }',  # missing ';' before '}'
    'notify { action "x"; };',  # no priority
    'frobnicate 1 { };',
    'notify 1 { match "system"; };',
    'notify 1 { match "a" "[[:nope:]]"; action "x"; };',
])
def test_syntax_errors(bad: str) -> None:
    with pytest.raises(devd.DevdSyntaxError):
        cfg = devd.parse(bad, "bad.conf")
        first_match(cfg, devd.carp_event("1@tap0", "MASTER"))


SUBSYSTEM_RE = re.compile(r"[0-9]+@[0-9a-z_.]+", re.IGNORECASE)


@settings(max_examples=300, deadline=None)
@given(vhid=st.text("0123456789x", max_size=4),
       ifname=st.text("abcxyzAZ09_.-@ $'\"", max_size=12),
       type_=st.sampled_from(["MASTER", "BACKUP", "INIT", "master", "LINK_UP", "", "MASTE"]))
def test_rule_matches_exactly_the_documented_language(vhid: str, ifname: str,
                                                      type_: str) -> None:
    rule_cfg = devd.parse(render.template_text(render.KINDS["devd"])
                          .replace("@BINDIR@", "/b").replace("@CONFIG@", "/c"), OURS)
    subsystem = f"{vhid}@{ifname}"
    if any(c.isspace() for c in subsystem):
        return  # not one devd word
    event = devd.parse_event(f"!system=CARP subsystem={subsystem} type={type_}")
    expected = (SUBSYSTEM_RE.fullmatch(subsystem) is not None
                and type_.upper() in ("MASTER", "BACKUP", "INIT"))
    assert (first_match(rule_cfg, event) is not None) == expected
    if expected:
        argv = devd.action_argv(rule_cfg.rules[0].actions[0], event)
        assert argv[-2:] == [subsystem, type_]
        assert shlex.join(argv)  # representable


# -- carphooks check: rules ours hides, and merged rules -------------------------------
# devd runs only the first matching rule (sbin/devd/devd.cc config::find_and_execute,
# rules stable-sorted by priority in config::sort_vector): a CARP rule below ours
# silently stops running.

OLD_SCRIPT = """
notify 100 {
	match "system"		"CARP";
	match "subsystem"	"[0-9]+@[0-9a-z]+";
	match "type"		"(MASTER|BACKUP)";
	action "/root/carp.sh $subsystem $type";
};
"""


def _doctor_devd(tmp_path: Path, files: dict[str, str], rule_text: str,
                 ) -> dict[str, check.Check]:

    (tmp_path / "cfg").mkdir(parents=True, exist_ok=True)
    cfg_path = write_cluster(tmp_path / "cfg" / "carphooks.toml")
    tgt = target(configmod.load(cfg_path), "hA")
    root = _tree(tmp_path, files, rule_text)
    doc = check.Doctor(config_path=cfg_path, root=root)
    doc.check_devd(tgt)
    return {c.name: c for c in doc.checks}


def test_check_lists_the_rules_ours_hides(tmp_path: Path, rule_text: str) -> None:
    lines = _doctor_devd(tmp_path, {"/usr/local/etc/devd/old-carp.conf": OLD_SCRIPT,
                                    "/etc/devd.conf": STOCK}, rule_text)
    assert lines["devd shadowing"].status == check.OK
    hidden = lines["devd hidden rules"]
    assert hidden.status == check.WARN
    assert "/usr/local/etc/devd/old-carp.conf:2 (notify 100) for type MASTER/BACKUP" in \
        hidden.message
    assert "never runs its action" in hidden.message
    assert "merge" in hidden.fix and "walkthrough" in hidden.fix
    assert "/etc/devd.conf" not in hidden.message  # stock rules match no CARP event
    assert OURS not in hidden.message


def test_a_merged_rule_running_carp_event_is_accepted(tmp_path: Path, rule_text: str) -> None:
    """One rule above ours that runs carp-event (same argv) and then the old script:
    check says OK and lists what that rule hides, but not carphooks' own rule."""
    ours_action = devd.parse(rule_text, OURS).rules[0].actions[0]
    merged = ('notify 300 {\n\tmatch "system" "CARP";\n'
              '\tmatch "subsystem" "[0-9]+@[0-9a-z_.]+";\n'
              '\tmatch "type" "(MASTER|BACKUP|INIT)";\n'
              f'\taction "{ours_action}; /root/carp.sh $subsystem $type";\n}};\n')
    lines = _doctor_devd(tmp_path, {"/usr/local/etc/devd/merged.conf": merged,
                                    "/usr/local/etc/devd/old-carp.conf": OLD_SCRIPT},
                         rule_text)
    assert lines["devd shadowing"].status == check.OK, lines["devd shadowing"].line()
    assert "merged rule /usr/local/etc/devd/merged.conf:1" in lines["devd shadowing"].message
    assert "old-carp.conf:2" in lines["devd hidden rules"].message
    assert OURS not in lines["devd hidden rules"].message
    # the same rule running carp-event with another config is not a merge
    other = merged.replace("--config /usr/local/etc/carphooks.toml",
                           "--config /tmp/other.toml")
    assert other != merged
    lines = _doctor_devd(tmp_path / "2", {"/usr/local/etc/devd/merged.conf": other},
                         rule_text)
    assert lines["devd shadowing"].status == check.FAIL


def test_action_commands_split_like_sh() -> None:
    event = devd.carp_event("220@lagg0_vlan220", "INIT")
    assert devd.action_commands('/a $subsystem $type; /b x && /c "y z" | /d&', event) == [
        ["/a", "220@lagg0_vlan220", "INIT"], ["/b", "x"], ["/c", "y z"], ["/d"]]
