"""Backup throughput and memory against bare pg_dump, all measured in the same run.

    .venv/bin/python -m benchmarks.backup_throughput --scale 20 --scale 150

For each scale N it builds `pgbench -i -s N --foreign-keys` plus 1500*N wide rows (~1.6 kB of
varied text and nested jsonb each), then times, one after the other on the same server:

  bare        pg_dump -Fc -f FILE                  (what most people run)
  read limit  pg_dump -Fc -Z0 > /dev/null          (the server backend alone)
  bare pipe   pg_dump -Fc -Z0 | zstd > /dev/null   (the dump step's compressor, nothing else)
  dump step   backup_pipelines' dump: pg_dump -Z0 | zstd, hashed, into local storage, as a
              fresh Python process, and the dump itself (the manifest's dump_seconds)
  chain       dump -> archive -> verification, as the scheduled `daily_backup` job runs it
              (`dg launch`), and its step alone (the duration in the run's event log)
  verification  the verification step alone: the archive read back, hashed and decoded whole

and prints wall-time ratios and the peak RSS of every process involved (sampled from /proc).
Then, for restores:

  bare restore  pg_restore -j 2 of the bare pg_dump -Fc file into an empty database, before
                and after the restore test (the ratio is against their mean)
  restore test  backup_pipelines' restore test of the archive: download and decompress,
                pg_restore -j 2, validation against the manifest, drop; timed as a fresh
                Python process (imports included) and inside it, as a Dagster step runs it
"""

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import psycopg
import yaml

from backup_pipelines import names
from backup_pipelines.core.common.layout import manifest_key
from backup_pipelines_demo.cluster import LocalCluster, start_cluster

WIDE_TABLE = """
CREATE TABLE wide_events (id bigint PRIMARY KEY, account_id int NOT NULL, kind text NOT NULL,
  body text NOT NULL, attributes jsonb NOT NULL, created_at timestamptz NOT NULL);
INSERT INTO wide_events
SELECT g, g % 9973, (ARRAY['signup', 'invoice', 'login', 'export', 'error'])[1 + g % 5],
       (SELECT string_agg(md5((g * 100 + i)::text), ' ') FROM generate_series(1, 22) i),
       jsonb_build_object(
         'source', jsonb_build_object('ip', '10.0.' || g % 255 || '.' || g % 7,
                                      'agent', 'client/' || g % 40),
         'tags', jsonb_build_array(md5((g * 3)::text), g % 100),
         'payload', jsonb_build_object(
           'text', (SELECT string_agg(md5((g * 100 + 50 + i)::text), '')
                    FROM generate_series(1, 20) i),
           'n', g)),
       timestamptz '2026-01-01' + g * interval '1 second'
FROM generate_series(1, %(rows)s) g;
"""


class PeakRss:
    """Samples /proc for the peak resident memory of a process tree, per program name."""

    def __init__(self, root_pid: int) -> None:
        self.root_pid = root_pid
        self.peaks: dict[str, int] = defaultdict(int)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _tree(self) -> list[int]:
        parents: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                    parents[int(entry)] = int(fields[1])
                except (OSError, IndexError):
                    continue
        tree, frontier = [self.root_pid], [self.root_pid]
        while frontier:
            frontier = [pid for pid, parent in parents.items() if parent in frontier]
            tree.extend(frontier)
        return tree

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self._tree():
                try:
                    status = Path(f"/proc/{pid}/status").read_text().splitlines()
                except OSError:
                    continue
                fields = dict(line.split(":", 1) for line in status if ":" in line)
                name = fields.get("Name", "?").strip()
                rss_kb = int(fields.get("VmRSS", "0 kB").split()[0])
                self.peaks[name] = max(self.peaks[name], rss_kb * 1024)
            time.sleep(0.05)

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        return dict(self.peaks)


def measure(argv: list[str], env: dict[str, str], stdout=subprocess.DEVNULL) -> tuple[float, dict]:
    started = time.monotonic()
    process = subprocess.Popen(argv, env=env, stdout=stdout, stderr=subprocess.PIPE)
    sampler = PeakRss(process.pid)
    _, stderr = process.communicate()
    elapsed = time.monotonic() - started
    peaks = sampler.stop()
    if process.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {stderr.decode()[-2000:]}")
    return elapsed, peaks


def compare_alternating(
    argvs: dict[str, list[str]], env: dict[str, str], work: Path, repeat: int
) -> None:
    """Run each command `repeat` times, alternating, each in its own process; print the
    medians of the whole process and of the work alone (what it printed, when it printed a
    number), their ratios against the first command, and every process's peak RSS."""
    seconds: dict[str, list[float]] = {name: [] for name in argvs}
    work_seconds: dict[str, list[float]] = {name: [] for name in argvs}
    peaks: dict[str, dict[str, int]] = {name: {} for name in argvs}
    printed = work / "printed"
    for _ in range(repeat):
        for name, argv in argvs.items():
            with printed.open("w") as out:
                elapsed, peak = measure(argv, env, stdout=out)
            seconds[name].append(elapsed)
            said = printed.read_text().strip()
            work_seconds[name].append(float(said) if said else elapsed)
            for program, rss in peak.items():
                peaks[name][program] = max(peaks[name].get(program, 0), rss)
    base = statistics.median(seconds[next(iter(argvs))])
    print(f"   {'step':30} {'process s':>9} {'x bare':>6} {'work s':>7} {'x bare':>6}  peak RSS")
    for name in argvs:
        whole, alone = statistics.median(seconds[name]), statistics.median(work_seconds[name])
        rss = ", ".join(
            f"{program} {value // (1 << 20)} MiB" for program, value in sorted(peaks[name].items())
        )
        print(
            f"   {name:30} {whole:9.1f} {whole / base:6.2f} {alone:7.1f} {alone / base:6.2f}  "
            f"{rss}",
            flush=True,
        )


def child_command(module: str, *args: str) -> list[str]:
    """The argv of one measured process of `module` (a benchmark whose main is scales_main)."""
    return [sys.executable, "-m", module, "--child", *args]


def scales_main(
    doc: str,
    child: Callable[..., None],
    child_args: tuple[str, ...],
    run_scale: Callable[[LocalCluster, Path, int, int], None],
    prefix: str,
) -> None:
    """A comparison benchmark's command line: `--scale N` (repeatable) `--repeat R` runs
    `run_scale` for each scale on one throw-away server; `--child ARGS` is a measured process."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--scale", type=int, action="append")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--child", nargs=len(child_args), metavar=child_args, help=argparse.SUPPRESS
    )
    arguments = parser.parse_args()
    if arguments.child:
        child(*arguments.child)
        return
    work = Path(tempfile.mkdtemp(prefix=prefix))
    work.chmod(0o755)
    cluster = start_cluster(work / "cluster", password="bench")
    try:
        for scale in arguments.scale or [20]:
            run_scale(cluster, work, scale, arguments.repeat)
    finally:
        cluster.destroy()
        shutil.rmtree(work, ignore_errors=True)


def build_database(cluster: LocalCluster, bin_dir: Path, database: str, scale: int) -> int:
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {database}")
        admin.execute(f"CREATE DATABASE {database}")
    env = {**os.environ, "PGPASSWORD": cluster.superuser_password}
    subprocess.run(
        [
            str(bin_dir / "pgbench"),
            "-i",
            "-q",
            "-s",
            str(scale),
            "--foreign-keys",
            "-h",
            "127.0.0.1",
            "-p",
            str(cluster.port),
            "-U",
            "postgres",
            database,
        ],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with psycopg.connect(cluster.url(database), autocommit=True) as conn:
        conn.execute(WIDE_TABLE.replace("%(rows)s", str(1500 * scale)))
        conn.execute("VACUUM ANALYZE")
        (size,) = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return size


def run_scale(cluster: LocalCluster, work: Path, scale: int) -> dict[str, object]:
    bin_dir = cluster.bin_dir
    assert bin_dir is not None
    database = f"bench_s{scale}"
    print(f"\n== scale {scale}: building {database} ...", flush=True)
    size = build_database(cluster, bin_dir, database, scale)
    print(f"   database size {size / 1e9:.2f} GB", flush=True)

    env = {**os.environ, "PGPASSWORD": cluster.superuser_password}
    dsn = f"host=127.0.0.1 port={cluster.port} user=postgres dbname={database}"
    pg_dump = str(bin_dir / "pg_dump")
    results: dict[str, tuple[float, dict]] = {}
    bare_file = work / f"{database}.bare.dump"

    results["bare pg_dump -Fc"] = measure([pg_dump, "-Fc", "-f", str(bare_file), "-d", dsn], env)
    results["read limit (-Z0 > /dev/null)"] = measure([pg_dump, "-Fc", "-Z0", "-d", dsn], env)
    # The same compressor as the dump step, with nothing of this project in the pipe.
    pipe = f"{shlex.quote(pg_dump)} -Fc -Z0 -d {shlex.quote(dsn)} | zstd -q -c > /dev/null"
    results["pg_dump -Z0 | zstd > /dev/null"] = measure(["bash", "-o", "pipefail", "-c", pipe], env)

    store = work / f"store_s{scale}"
    shutil.rmtree(store, ignore_errors=True)
    config = work / f"bench_s{scale}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "storage": {"local": {"path": str(store)}},
                "databases": {
                    database: {
                        "url": f"postgresql://postgres:${{BENCH_PW}}@127.0.0.1:"
                        f"{cluster.port}/{database}"
                    }
                },
                "restore_test": {"jobs": 2, "scratch_dir": str(work)},
            }
        )
    )
    bench_env = {
        **os.environ,
        "BENCH_PW": cluster.superuser_password,
        "BACKUP_PIPELINES_CONFIG": str(config),
        "DAGSTER_HOME": str(work / "dagster_home"),
    }
    (work / "dagster_home").mkdir(exist_ok=True)
    results["dump step"] = measure(
        [sys.executable, str(Path(__file__).with_name("dump_step.py")), database], bench_env
    )
    today = dt.datetime.now(dt.UTC).date().isoformat()
    manifest = json.loads((store / "dumps" / manifest_key(database, today)).read_text())
    # Snapshot to committed object, without the Python process's start-up.
    results["the dump itself (dump_seconds)"] = (float(manifest["dump_seconds"]), {})
    shutil.rmtree(store, ignore_errors=True)
    results["dump step, encrypted (age)"] = measure(
        [sys.executable, str(Path(__file__).with_name("dump_step.py")), database],
        {**bench_env, **encrypted_config(config, work)},
    )
    shutil.rmtree(store, ignore_errors=True)
    results["whole chain (dagster)"] = measure(
        [
            str(Path(sys.executable).parent / "dg"),
            "launch",
            "--job",
            names.DAILY_BACKUP_JOB,
            "--partition",
            today,
            "-m",
            "backup_pipelines.definitions",
        ],
        bench_env,
    )
    results["whole chain, its step alone"] = (step_seconds(work / "dagster_home"), {})
    results["verification step (every byte)"] = measure(
        [sys.executable, str(Path(__file__).with_name("verification_step.py")), database],
        bench_env,
    )

    archive = next((store / "archive" / database / today).glob("*.dump.zst"))
    bare_seconds = results["bare pg_dump -Fc"][0]
    read_limit = results["read limit (-Z0 > /dev/null)"][0]
    print(f"   {'step':32} {'seconds':>8} {'x bare':>7} {'x read':>7}  peak RSS by process")
    for name, (seconds, peaks) in results.items():
        memory = ", ".join(f"{proc} {rss / 2**20:.0f} MiB" for proc, rss in sorted(peaks.items()))
        print(
            f"   {name:32} {seconds:8.1f} {seconds / bare_seconds:7.2f} "
            f"{seconds / read_limit:7.2f}  {memory}"
        )
    print(
        f"   sizes: bare pg_dump -Fc {bare_file.stat().st_size / 1e6:.0f} MB, "
        f"archive (zstd) {archive.stat().st_size / 1e6:.0f} MB"
    )
    restores = measure_restores(cluster, work, database, bare_file, bench_env)
    bare_file.unlink()
    return {name: peaks for name, (_, peaks) in {**results, **restores}.items()}


def step_seconds(dagster_home: Path) -> float:
    """The newest run's step durations, from its event log (what Dagster reports per step)."""
    from dagster import DagsterInstance
    from dagster._core.events import DagsterEventType

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        (run,) = instance.get_runs(limit=1)
        successes = instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_SUCCESS)
        return sum(
            record.dagster_event.event_specific_data.duration_ms / 1000
            for record in successes
            if record.dagster_event
        )


def encrypted_config(config: Path, work: Path) -> dict[str, str]:
    """Environment for the same configuration with client-side encryption on (a new age key)."""
    key_file = work / "bench-age-key.txt"
    if not key_file.exists():
        subprocess.run(["age-keygen", "-o", str(key_file)], check=True, capture_output=True)
    identity = next(x for x in key_file.read_text().splitlines() if x.startswith("AGE-SECRET"))
    document = yaml.safe_load(config.read_text())
    document["encryption"] = {"identity": "${BENCH_AGE_IDENTITY}"}
    encrypted = config.with_name(f"{config.stem}.encrypted.yaml")
    encrypted.write_text(yaml.safe_dump(document))
    return {"BACKUP_PIPELINES_CONFIG": str(encrypted), "BENCH_AGE_IDENTITY": identity}


def bare_restore(
    cluster: LocalCluster, database: str, bare_file: Path, env: dict[str, str]
) -> tuple[float, dict]:
    """`pg_restore -j 2` of the bare dump into a new database (dropped after, untimed)."""
    target = f"{database}_bare_restore"
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {target}")
        admin.execute(f"CREATE DATABASE {target}")
    assert cluster.bin_dir is not None
    target_dsn = f"host=127.0.0.1 port={cluster.port} user=postgres dbname={target}"
    measured = measure(
        [str(cluster.bin_dir / "pg_restore"), "-j", "2", "-d", target_dsn, str(bare_file)],
        {**env, "PGPASSWORD": cluster.superuser_password},
    )
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {target}")
    return measured


def measure_restores(
    cluster: LocalCluster, work: Path, database: str, bare_file: Path, env: dict[str, str]
) -> dict[str, tuple[float, dict]]:
    # The bare restore runs before and after the restore test, and the ratio is against their
    # mean: whichever restore runs second pays for the first one's checkpoints and writeback.
    before = bare_restore(cluster, database, bare_file, env)
    report = work / f"{database}_restore_test.json"
    results = {
        "restore test": measure(
            [
                sys.executable,
                str(Path(__file__).with_name("restore_test_step.py")),
                database,
                f"{report}",
            ],
            env,
        )
    }
    after = bare_restore(cluster, database, bare_file, env)
    print(
        f"   bare pg_restore -j 2: {before[0]:.1f} s before the restore test, "
        f"{after[0]:.1f} s after"
    )
    results = {"bare pg_restore -j 2": ((before[0] + after[0]) / 2, after[1]), **results}
    evidence = json.loads(report.read_text())
    bare = results["bare pg_restore -j 2"][0]
    in_step = evidence["total_seconds"]
    print(f"   {'restore':32} {'seconds':>8} {'x bare':>7}")
    for name, (seconds, peaks) in results.items():
        memory = ", ".join(f"{proc} {rss / 2**20:.0f} MiB" for proc, rss in sorted(peaks.items()))
        print(f"   {name:32} {seconds:8.1f} {seconds / bare:7.2f}  {memory}")
    print(f"   {'restore test, inside its step':32} {in_step:8.1f} {in_step / bare:7.2f}")
    print(
        "   restore test breakdown: "
        + ", ".join(
            f"{part} {evidence[part]:.1f} s"
            for part in ("fetch_seconds", "pg_restore_seconds", "validation_seconds")
        )
        + f"; {evidence['tables_compared']} tables, {evidence['rows_compared']:,} rows compared"
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, action="append", help="pgbench scale (repeat)")
    parser.add_argument("--keep", action="store_true", help="keep the server and data")
    options = parser.parse_args()
    scales = options.scale or [20, 150]

    work = Path(tempfile.mkdtemp(prefix="backup-pipelines-bench-"))
    work.chmod(0o755)
    cluster = start_cluster(work / "pg", password="bench")
    peaks_by_scale = {}
    try:
        for scale in scales:
            peaks_by_scale[scale] = run_scale(cluster, work, scale)
    finally:
        if not options.keep:
            cluster.destroy()
            shutil.rmtree(work, ignore_errors=True)
    if len(scales) >= 2:
        small, large = min(scales), max(scales)
        print(f"\n== peak RSS growth from scale {small} to {large} (python processes)")
        for step in ("dump step", "whole chain (dagster)"):
            grow = peaks_by_scale[large][step].get("python", 0) - peaks_by_scale[small][step].get(
                "python", 0
            )
            print(f"   {step:32} {grow / 2**20:+.1f} MiB")


if __name__ == "__main__":
    main()
