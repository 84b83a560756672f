"""Inserting a row without the ORM's unit of work, for the hot paths (issuing, auditing).

`session.add` + `flush` spends most of its time in bookkeeping (identity map, change tracking, event hooks) that
a row written once and never changed in that session does not need; a Core INSERT of the same values costs about
a third. The row object is still built through the model, so field defaults apply exactly as with `add`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Insert, Select, Table, insert, select
from sqlalchemy.orm import configure_mappers
from sqlmodel import Session, SQLModel


@functools.cache
def _insert(table: Table) -> Insert:
    return insert(table)  # built once per table: constructing it costs as much as running it


def insert_row(session: Session, row: SQLModel) -> Any:
    """INSERT `row`'s column values in the session's transaction; returns the new primary key value (also set on
    an integer `id` the database assigned). The row is not attached to the session."""
    table: Table = row.__table__  # type: ignore[attr-defined]
    values = {column.name: getattr(row, column.name) for column in table.columns}
    autoincrement = [c.name for c in table.primary_key.columns if values.get(c.name) is None]
    for name in autoincrement:
        del values[name]
    result = session.connection().execute(_insert(table), values)
    key = result.inserted_primary_key
    if autoincrement and key is not None:
        setattr(row, autoincrement[0], key[0])
    return key[0] if key is not None else None


def select_models(*models: type[SQLModel]) -> Select[Any]:
    """A Core SELECT of every column of `models`' tables, in order; join and filter it, then read with `models_of`."""
    return select(*(column for model in models for column in model.__table__.columns))  # type: ignore[attr-defined]


def models_of(row: Sequence[Any], *models: type[SQLModel]) -> tuple[Any, ...]:
    """Read-only snapshots (`snapshot`) of `models` from a row of `select_models(*models)`."""
    snapshots, start = [], 0
    for model in models:
        columns = model.__table__.columns  # type: ignore[attr-defined]
        snapshots.append(snapshot(model, {column.key: row[start + offset] for offset, column in enumerate(columns)}))
        start += len(columns)
    return tuple(snapshots)


def snapshot(model: type[SQLModel], values: dict[str, Any]) -> Any:
    """A read-only `model` of values as the database holds them (read back, or just written).

    Built with `model_construct`: no validation (the values come from the database through the columns' own
    types, or were just written through them) and no ORM state, ~5 us against ~90 us for loading the object
    through a Session. It reads like the model but belongs to no session: never add it to one, load the row."""
    configure_mappers()  # reading goes through the mapped attributes, set up at the first ORM use (a no-op after)
    return model.model_construct(**values)
