"""docker/: compose's sample-data step seeds a real server (the rest of docker/ is checked
without a server, in fast/test_docker_files.py)."""

import os
import subprocess
import sys

import psycopg

from backup_pipelines_tests.support.config import BACKUP_PASSWORD, RESTORE_TEST_PASSWORD


def test_the_sample_data_step_seeds_a_real_server(cluster):
    env = {
        **os.environ,
        "SAMPLE_ADMIN_URL": cluster.url(),
        "BACKUP_PASSWORD": BACKUP_PASSWORD,
        "RESTORE_TEST_PASSWORD": RESTORE_TEST_PASSWORD,
    }
    command = [sys.executable, "-m", "backup_pipelines_demo.sample_databases"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert BACKUP_PASSWORD not in done.stdout + done.stderr
    with psycopg.connect(cluster.url("saas_console", user="backup", password=BACKUP_PASSWORD)) as c:
        assert c.execute("SELECT count(*) FROM feature_flags").fetchone()[0] == 3
