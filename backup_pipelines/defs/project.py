"""What every domain's definitions are built from: the operator's configuration file, read once
when the code location loads, and the daily partitions all backups share."""

from __future__ import annotations

from dataclasses import dataclass

from dagster import DailyPartitionsDefinition

from backup_pipelines.core.common.config import BackupConfig


@dataclass(frozen=True)
class Project:
    config: BackupConfig
    partitions: DailyPartitionsDefinition

    @classmethod
    def from_config(cls, config: BackupConfig) -> Project:
        partitions = DailyPartitionsDefinition(
            start_date=config.start_date.isoformat(), timezone="UTC", end_offset=1
        )
        return cls(config, partitions)

    @property
    def databases(self) -> list[str]:
        return list(self.config.databases)

    @property
    def buckets(self) -> list[str]:
        return list(self.config.buckets)
