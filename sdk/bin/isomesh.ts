#!/usr/bin/env node
// The `isomesh` executable (plugin author and operator commands). The repo's root bin wraps the same
// main() and adds `run` through extraCommands. Exit codes: docs/cli.md.
import { main } from '../src/cli/main.ts';

process.exitCode = await main(process.argv.slice(2));
