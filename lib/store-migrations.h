/* SPDX-License-Identifier: MIT */
/* The migrations embedded from schema/ at build time (generated migrations.c). */
#pragma once

struct store_migration {
	int version;
	const char *name;
	const char *sql;
};

extern const struct store_migration store_migrations[];
extern const int store_migrations_count;
