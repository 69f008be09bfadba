-- A second database for Dagster's own storage, beside facepipe's `faces` table.
CREATE DATABASE dagster;
