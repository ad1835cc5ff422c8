#!/bin/sh
# First start of the postgres container (empty volume): the database and its two roles.
#   b2bscore_owner  owns the database and its tables; the migrate service runs as it.
#   b2bscore_app    the API and the workers; `b2bscore db grant-app-role b2bscore_app`
#                   (run by migrate after each upgrade) gives it its table rights.
# Passwords come from the environment (./.env, written by deploy/compose/make-secrets);
# psql's :'var' quoting keeps them literal.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v owner_password="$B2BSCORE_OWNER_DB_PASSWORD" \
    -v app_password="$B2BSCORE_APP_DB_PASSWORD" <<'SQL'
CREATE ROLE b2bscore_owner LOGIN PASSWORD :'owner_password';
CREATE ROLE b2bscore_app LOGIN PASSWORD :'app_password';
CREATE DATABASE b2bscore OWNER b2bscore_owner;
REVOKE ALL ON DATABASE b2bscore FROM PUBLIC;
GRANT CONNECT ON DATABASE b2bscore TO b2bscore_app;
SQL
