"""Issue 12, the first hour: the install prefix, the hooks' interpreters in ``check``,
``--version``, CARP passwords only with ``--show-secrets``, shell completion."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from setupkit import write_cluster

from carphooks import config as configmod
from carphooks.cli import admin as cli
from carphooks.errors import UsageError
from carphooks.setup import check, install, render

BINDIR = Path(sys.executable).parent  # this venv's console scripts
GOOD_SYSCTL = {"net.inet.carp.preempt": 1, "net.link.ether.inet.garp_rexmit_count": 4}
IFACES = ("lo0", "vtnet0", "tap0", "vtnet1", "vtnet1.100")


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    return write_cluster(tmp_path / "carphooks.toml", "tinc")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


def doctor(cfg: Path, root: Path, bindir: Path = BINDIR, prefix: str | None = None,
           ) -> check.Doctor:
    return check.run(cfg, root=root, host="hA", bindir=str(bindir), prefix=prefix,
                     interfaces=lambda: IFACES, sysctl=GOOD_SYSCTL.get)


def lines(doc: check.Doctor, name: str) -> list[str]:
    return [c.line() for c in doc.checks if c.name == name]


def do_install(cfg: Path, root: Path, bindir: Path = BINDIR,
               prefix: str | None = None) -> install.Report:
    tgt = render.target(configmod.load(cfg), host="hA", bindir=bindir, prefix=prefix)
    return install.install(render.render_install_set(tgt), root)


# -- the install prefix -------------------------------------------------------------------

def test_prefix_follows_the_console_scripts(tmp_path: Path) -> None:
    assert render.resolve_prefix(Path("/usr/local/bin")) == Path("/usr/local")
    assert render.resolve_prefix(Path("/opt/pkg/bin")) == Path("/opt/pkg")
    assert render.resolve_prefix(Path("/opt/pkg/bin"), "/srv/x/") == Path("/srv/x")
    # a virtualenv's directory is not read by devd, cron or syslogd: FreeBSD's LOCALBASE
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/local/bin\n")
    assert render.resolve_prefix(venv / "bin") == render.LOCALBASE
    assert render.resolve_prefix(Path("/usr/local/libexec/carphooks")) == render.LOCALBASE
    with pytest.raises(UsageError, match="not an absolute path"):
        render.resolve_prefix(Path("/usr/local/bin"), "opt")
    with pytest.raises(render.RenderError, match="unsafe"):
        render.resolve_prefix(Path("/usr/local/bin"), "/opt/my prefix")


def test_drop_ins_and_their_comments_follow_the_prefix(cfg: Path) -> None:
    config = configmod.load(cfg)
    tgt = render.target(config, host="hA", bindir="/opt/pkg/bin")
    dests = {r.kind.name: r for r in render.render_install_set(tgt)}
    assert dests["devd"].dest == "/opt/pkg/etc/devd/carphooks.conf"
    assert dests["cron"].dest == "/opt/pkg/etc/cron.d/carphooks"
    assert dests["syslog.conf"].dest == "/opt/pkg/etc/syslog.d/carphooks.conf"
    assert dests["newsyslog.conf"].dest == "/opt/pkg/etc/newsyslog.conf.d/carphooks.conf"
    assert dests["sysctl.conf"].dest == "/etc/sysctl.conf.local"  # base's file, no prefix
    for name in ("cron", "syslog.conf", "newsyslog.conf"):
        assert dests[name].dest in dests[name].text, name
    assert "/opt/pkg/bin/carp-event" in dests["devd"].text
    for item in dests.values():
        assert "/usr/local/etc/cron.d" not in item.text
        assert "installed as /usr/local" not in item.text


def test_install_and_next_steps_use_the_prefix(cfg: Path, root: Path) -> None:
    report = do_install(cfg, root, prefix="/opt/pkg")
    assert (root / "opt/pkg/etc/devd/carphooks.conf").is_file()
    assert (root / "opt/pkg/etc/cron.d/carphooks").is_file()
    assert not (root / "usr/local/etc/devd").exists()
    steps = "\n".join(install.next_steps(report, "carp", "tinc", ["tap0"]))
    assert "/opt/pkg/etc/cron.d/carphooks" in steps
    assert "/opt/pkg/etc/syslog.d/carphooks.conf" in steps
    assert "/usr/local/etc/tinc/carp/hosts/NAME" in steps  # tinc's own directory


def test_check_fails_when_devd_does_not_read_the_prefix(cfg: Path, root: Path) -> None:
    do_install(cfg, root, prefix="/opt/pkg")
    doc = doctor(cfg, root, prefix="/opt/pkg")
    assert lines(doc, "devd")[0].startswith("OK")  # the file is where install put it
    (line,) = lines(doc, "devd directory")
    assert line.startswith("FAIL devd directory: /opt/pkg/etc/devd/carphooks.conf is not in "
                           "a directory devd reads (/etc/devd, /usr/local/etc/devd)")
    assert "carphooks install --prefix /usr/local" in line
    do_install(cfg, root)
    assert lines(doctor(cfg, root), "devd directory") == []


def test_cli_prefix_option(cfg: Path, root: Path) -> None:
    args = ["-c", str(cfg), "install", "--root", str(root), "--host", "hA",
            "--bindir", str(BINDIR), "--prefix", "/opt/pkg"]
    result = CliRunner().invoke(cli.cli, args)
    assert result.exit_code == 0, result.output
    assert "prefix /opt/pkg:" in result.output
    assert (root / "opt/pkg/etc/devd/carphooks.conf").is_file()
    result = CliRunner().invoke(cli.cli, ["-c", str(cfg), "render", "cron", "--host", "hA",
                                          "--bindir", "/usr/local/bin", "--prefix", "/opt/pkg"])
    assert result.exit_code == 0, result.output
    assert "# /opt/pkg/etc/cron.d/carphooks on hA" in result.output


# -- the hooks' interpreters ----------------------------------------------------------------

def plant_scripts(bindir: Path, shebang: str) -> None:
    """Console scripts as pip writes them, with ``shebang`` as their first line."""
    bindir.mkdir(parents=True, exist_ok=True)
    for name in render.CONSOLE_SCRIPTS:
        module = "carphooks.cli.admin" if name == "carphooks" else "carphooks.cli.hooks"
        path = bindir / name
        path.write_text(f"{shebang}\nimport sys\nfrom {module} import main\n"
                        "sys.exit(main())\n")
        path.chmod(0o755)


def test_interpreters_ok_for_this_venv(cfg: Path, root: Path) -> None:
    do_install(cfg, root)
    (line,) = lines(doctor(cfg, root), "interpreters")
    assert line.startswith("OK   interpreters: ")
    assert "-c 'import carphooks.cli.admin, carphooks.cli.hooks'" in line
    assert "/bin/sh -c :" in line  # the installed tinc scripts


def test_missing_interpreter_fails_with_the_fix(cfg: Path, root: Path, tmp_path: Path) -> None:
    bindir = tmp_path / "pkg" / "bin"
    plant_scripts(bindir, "#!/nonexistent/bin/python3.9")
    do_install(cfg, root, bindir=bindir)
    doc = doctor(cfg, root, bindir=bindir)
    (line,) = lines(doc, "interpreters")
    assert line.startswith(f"FAIL interpreters: {bindir}/carphooks runs "
                           "/nonexistent/bin/python3.9, which does not exist")
    assert f"{bindir}/carp-event runs /nonexistent/bin/python3.9" in line
    assert "; fix: reinstall carphooks for the Python that exists now" in line
    assert "pip install --force-reinstall carphooks" in line and "carphooks install" in line
    assert doc.failed


def test_interpreter_that_fails_or_lacks_carphooks(cfg: Path, root: Path,
                                                   tmp_path: Path) -> None:
    fake = tmp_path / "py" / "python3.12"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'click'\" >&2\n"
                    "exit 1\n")
    fake.chmod(0o755)
    bindir = tmp_path / "pkg" / "bin"
    plant_scripts(bindir, f"#!{fake}")
    do_install(cfg, root, bindir=bindir)
    (line,) = lines(doctor(cfg, root, bindir=bindir), "interpreters")
    assert line.startswith("FAIL interpreters: ")
    assert (f"{fake} -c 'import carphooks.cli.admin, carphooks.cli.hooks' (the interpreter "
            f"of {bindir}/carphooks, {bindir}/carp-event," in line)
    assert "exits 1: ModuleNotFoundError: No module named 'click'" in line


def test_interpreter_that_hangs_is_bounded(cfg: Path, root: Path, tmp_path: Path) -> None:
    fake = tmp_path / "py" / "python3"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nsleep 30\n")
    fake.chmod(0o755)
    bindir = tmp_path / "pkg" / "bin"
    plant_scripts(bindir, f"#!{fake}")
    from carphooks.runner import Runner

    doc = check.Doctor(config_path=cfg, root=root, host="hA", bindir=str(bindir),
                       interfaces=lambda: IFACES, sysctl=GOOD_SYSCTL.get,
                       runner=Runner(timeout=0.5))
    doc.run()
    (line,) = lines(doc, "interpreters")
    assert "does not run: timed out after 0.5 s" in line


def test_tinc_hook_with_a_missing_shell(cfg: Path, root: Path) -> None:
    do_install(cfg, root)
    hook = root / "usr/local/etc/tinc/carp/host-up"
    hook.write_text(hook.read_text().replace("#!/bin/sh", "#!/nonexistent/sh", 1))
    (line,) = lines(doctor(cfg, root), "interpreters")
    assert line.startswith(f"FAIL interpreters: {hook} runs /nonexistent/sh, which does "
                           "not exist")
    assert line.endswith("; fix: carphooks install")


# -- CLI: --version, secrets, completion --------------------------------------------------------

def test_version() -> None:
    want = importlib.metadata.version("carphooks")
    for flag in ("--version", "-V"):
        result = CliRunner().invoke(cli.cli, [flag])
        assert result.exit_code == 0
        assert result.output == f"carphooks {want}\n"


@pytest.mark.parametrize("hook", ["carp-event", "tinc-up", "tinc-down", "tinc-host-up",
                                  "tinc-host-down"])
def test_hook_version(hook: str) -> None:
    """The hooks answer --version before reading any config or environment."""
    want = importlib.metadata.version("carphooks")
    for flag in ("--version", "-V"):
        proc = subprocess.run([str(BINDIR / hook), flag], capture_output=True, text=True,
                              timeout=30, env={"PATH": "/usr/bin:/bin"})
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"{hook} {want}\n", "")


def test_render_hides_carp_passwords_unless_asked(tmp_path: Path) -> None:
    cfg = write_cluster(tmp_path / "u.toml", "unicast")
    base = ["-c", str(cfg)]
    render_args = ["render", "rc.conf", "--host", "hA", "--bindir", "/usr/local/bin"]
    for extra in ([], ["-n"]):
        result = CliRunner().invoke(cli.cli, [*base, *extra, *render_args])
        assert result.exit_code == 0, result.output
        assert "s3cret" not in result.stdout and "db.pass" not in result.stdout
        assert "pass ******** peer 10.0.0.12" in result.stdout
        assert result.stdout.startswith("# CARP passwords are shown as ********; "
                                        "--show-secrets prints them")
        assert "--show-secrets prints them" in result.stderr
    # "render rc.conf > /etc/rc.conf.d/netif" is not the real file: check says so
    netif = tmp_path / "root" / "etc" / "rc.conf.d" / "netif"
    netif.parent.mkdir(parents=True)
    netif.write_text(result.stdout)
    netif.chmod(0o600)
    doc = check.run(cfg, root=tmp_path / "root", host="hA", bindir="/usr/local/bin",
                    interfaces=lambda: IFACES, sysctl=GOOD_SYSCTL.get)
    assert [c.status for c in doc.checks if c.name == "rc.conf"] == [check.FAIL]
    result = CliRunner().invoke(cli.cli, [*base, *render_args, "--show-secrets"])
    assert result.exit_code == 0
    assert "pass s3cret peer 10.0.0.12" in result.stdout and "pass db.pass" in result.stdout
    assert result.stderr == ""
    # prose in comments is not a password: the devd rule renders unchanged
    result = CliRunner().invoke(cli.cli, [*base, "render", "devd", "--host", "hA",
                                          "--bindir", "/usr/local/bin"])
    assert "would pass the literal text" in result.stdout and result.stderr == ""


def test_completion_as_carphooks_8_documents_it() -> None:
    man = (Path(__file__).resolve().parents[1] / "man" / "carphooks.8").read_text()
    documented = [line.split("#")[0].strip() for line in man.splitlines()
                  if "_CARPHOOKS_COMPLETE=" in line]
    assert len(documented) == 3  # bash, zsh, fish
    bash = shutil.which("bash")
    assert bash is not None
    env = {**os.environ, "PATH": f"{BINDIR}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([bash, "-c", f"{documented[0]}; complete -p carphooks"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "complete -o nosort -F _carphooks_completion carphooks"
    env.update({"_CARPHOOKS_COMPLETE": "bash_complete", "COMP_WORDS": "carphooks render rc",
                "COMP_CWORD": "2"})
    proc = subprocess.run([str(BINDIR / "carphooks")], env=env, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["plain,rc.conf", "plain,rc.d"]


def test_probe_runs_only_the_interpreter() -> None:
    script = "#!/x\nimport sys\nfrom carphooks.cli.hooks import carp_event_main\n"
    assert check.entry_module(script) == "carphooks.cli.hooks"
    assert check.entry_module("#!/bin/sh\nexec /usr/local/bin/tinc-up\n") is None
    py = "/usr/local/bin/python3.11"
    assert check.interpreter_argv([py, "-c", "evil()"]) == [py]
    assert check.interpreter_argv(["/usr/bin/env", "python3", "-E"]) == ["/usr/bin/env",
                                                                        "python3"]
    assert check.interpreter_argv(["/bin/sh", "-e"]) == ["/bin/sh"]
    assert check.interpreter_argv(["/usr/bin/perl"]) is None  # unknown: existence only
    assert check.probe_argv([py], ["carphooks.cli.admin", "carphooks.cli.hooks"]) == [
        py, "-c", "import carphooks.cli.admin, carphooks.cli.hooks"]
    assert check.probe_argv([py], []) == [py, "-c", "pass"]
    assert check.probe_argv(["/bin/sh"], []) == ["/bin/sh", "-c", ":"]
