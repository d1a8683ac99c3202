"""Canonical data: schema, id maps, splits and source adapters. Never imports Kedro."""
