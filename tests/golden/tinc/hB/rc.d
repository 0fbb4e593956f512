#!/bin/sh
#
# carphooks-managed: written by "carphooks install" from the carphooks package;
# local edits are replaced on the next install (the old file is kept as a backup).
#
# PROVIDE: carphooks
# REQUIRE: LOGIN syslogd
# KEYWORD: shutdown
#
# rc.d(8) script for "carphooks watch" on hB: the [[check]] health checks and a
# reconcile every reconcile_interval seconds, in one process supervised by daemon(8):
# restarted 1 s after it exits (-r), supervisor and loop pid files (-P, -p), stdio
# closed (-f; carphooks logs to syslog itself). Enable it with
#     sysrc carphooks_enable=YES && service carphooks start
# and use "service carphooks status|stop|restart". "service carphooks stop" sends
# SIGTERM to the supervisor, which passes it on to the loop and does not restart it.
# Without the loop, the cron entry still reconciles once a minute (no health checks).
#
# rc.conf(5) variables:
#     carphooks_enable   YES to start the loop at boot (default NO)
#     carphooks_config   config file (default /usr/local/etc/carphooks.toml)

. /etc/rc.subr

name="carphooks"
rcvar="carphooks_enable"
desc="carphooks health checks and periodic reconcile"

load_rc_config "$name"

: "${carphooks_enable:=NO}"
: "${carphooks_config:=/usr/local/etc/carphooks.toml}"

# rc.subr finds the running service through the supervisor's pid file: daemon(8)
# retitles itself "daemon: carphooks[PID]", whose first word matches procname.
pidfile="/var/run/${name}_daemon.pid"
carphooks_child_pidfile="/var/run/${name}.pid"
command="/usr/sbin/daemon"
procname="/usr/sbin/daemon"
command_args="-f -r -P ${pidfile} -p ${carphooks_child_pidfile} -t ${name} /usr/local/bin/carphooks --config ${carphooks_config} watch"

run_rc_command "$1"
