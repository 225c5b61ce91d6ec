BEGIN TRANSACTION;
CREATE TABLE artifacts (
        id TEXT PRIMARY KEY, run_id TEXT, kind TEXT, path TEXT, bytes INTEGER, sha256 TEXT,
        created_at REAL, manifest TEXT);
CREATE TABLE commands (
        id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, action TEXT NOT NULL,
        run_id TEXT, args TEXT, taken_at REAL, done_at REAL, result TEXT);
CREATE TABLE evals (
        run_id TEXT NOT NULL, step INTEGER NOT NULL, ts REAL, eval_loss REAL, data TEXT,
        PRIMARY KEY (run_id, step));
CREATE TABLE events (
        run_id TEXT NOT NULL, source TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL,
        kind TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (run_id, source, seq));
INSERT INTO "events" VALUES('20260101-000000-old0','supervisor',1,1.79644207193325328823e+09,'status','{"state": "queued"}');
INSERT INTO "events" VALUES('20260101-000000-old0','worker',1,1.79644207193424582484e+09,'status','{"state": "starting"}');
INSERT INTO "events" VALUES('20260101-000000-old0','worker',2,1.79644207193485307694e+09,'status','{"device": "cpu", "state": "training"}');
INSERT INTO "events" VALUES('20260101-000000-old0','worker',3,1.79644207193539881704e+09,'metric','{"epoch": 0.3333333333333333, "grad_norm": 1.0, "loss": 0.6, "lr": 0.0001, "rewards/accuracies": 0.6, "rewards/chosen": 0.1, "rewards/margins": 0.2, "rewards/rejected": -0.1, "step": 1, "tokens_per_s": 900.0}');
INSERT INTO "events" VALUES('20260101-000000-old0','worker',4,1.79644207193543243412e+09,'metric','{"epoch": 0.6666666666666666, "grad_norm": 1.0, "loss": 0.49999999999999994, "lr": 0.0001, "rewards/accuracies": 0.7, "rewards/chosen": 0.2, "rewards/margins": 0.4, "rewards/rejected": -0.2, "step": 2, "tokens_per_s": 900.0}');
INSERT INTO "events" VALUES('20260101-000000-old0','worker',5,1.7964420719354498386e+09,'metric','{"epoch": 1.0, "grad_norm": 1.0, "loss": 0.3999999999999999, "lr": 0.0001, "rewards/accuracies": 0.8, "rewards/chosen": 0.30000000000000004, "rewards/margins": 0.6000000000000001, "rewards/rejected": -0.30000000000000004, "step": 3, "tokens_per_s": 900.0}');
INSERT INTO "events" VALUES('20260101-000000-old0','worker',6,1.79644207193590235704e+09,'status','{"state": "completed"}');
CREATE TABLE holds (run_id TEXT PRIMARY KEY, gpu, gib REAL, ts REAL);
CREATE TABLE ingest (
        run_id TEXT NOT NULL, source TEXT NOT NULL, seq INTEGER NOT NULL DEFAULT 0,
        "offset" INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (run_id, source));
INSERT INTO "ingest" VALUES('20260101-000000-old0','worker',6,1097);
INSERT INTO "ingest" VALUES('20260101-000000-old0','supervisor',1,74);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
INSERT INTO "meta" VALUES('schema_version','1');
CREATE TABLE metrics (
        run_id TEXT NOT NULL, step INTEGER NOT NULL, ts REAL, epoch REAL, loss REAL,
        grad_norm REAL, lr REAL, tokens_per_s REAL, data TEXT, PRIMARY KEY (run_id, step));
INSERT INTO "metrics" VALUES('20260101-000000-old0',1,1.79644207193539881704e+09,3.33333333333333314829e-01,0.6,1.0,0.0001,900.0,'{"rewards/accuracies": 0.6, "rewards/chosen": 0.1, "rewards/margins": 0.2, "rewards/rejected": -0.1}');
INSERT INTO "metrics" VALUES('20260101-000000-old0',2,1.79644207193543243412e+09,6.66666666666666629659e-01,4.99999999999999944488e-01,1.0,0.0001,900.0,'{"rewards/accuracies": 0.7, "rewards/chosen": 0.2, "rewards/margins": 0.4, "rewards/rejected": -0.2}');
INSERT INTO "metrics" VALUES('20260101-000000-old0',3,1.7964420719354498386e+09,1.0,3.99999999999999911182e-01,1.0,0.0001,900.0,'{"rewards/accuracies": 0.8, "rewards/chosen": 0.30000000000000004, "rewards/margins": 0.6000000000000001, "rewards/rejected": -0.30000000000000004}');
CREATE TABLE runs (
        id TEXT PRIMARY KEY, name TEXT, node_uuid TEXT, origin_uuid TEXT, parent TEXT,
        graph_path TEXT, run_dir TEXT, spec TEXT, estimate TEXT, state TEXT, reason TEXT,
        warnings TEXT, device TEXT, created_at REAL, started_at REAL, finished_at REAL,
        step INTEGER, max_steps INTEGER, epoch REAL, eta_s REAL, error TEXT, loss REAL,
        grad_norm REAL, lr REAL, eval_loss REAL, tokens_per_s REAL, updated_at REAL);
INSERT INTO "runs" VALUES('20260101-000000-old0','old dpo',NULL,NULL,NULL,NULL,'/tmp/charts/v1home/runs/20260101-000000-old0','{"base_model": {"chat_template": "tokenizer", "revision": "", "source": "builtin:tiny-llama", "trust_remote_code": false}, "datasets": [{"columns": {}, "format": "auto", "max_rows": 0, "path": "/data/chats.jsonl"}], "evals": [], "export": {"adapter_zip": true, "gguf": true, "merged": false, "ollama_name": "", "quant": "Q4_K_M"}, "format_version": 1, "graph_path": "", "lora": {"alpha": 16, "dropout": 0.0, "quantization": "auto", "r": 8, "target_modules": ["auto"]}, "method": {"beta": 0.1, "desirable_weight": 1.0, "kl_coef": 0.0, "loss_type": "sigmoid", "max_completion_length": 128, "method": "dpo", "num_generations": 4, "simpo_gamma": 0.5, "temperature": 1.0, "undesirable_weight": 1.0}, "name": "old dpo", "node_uuid": "", "origin_uuid": "", "resources": {"device": "auto", "gpu_count": 1, "target": "local"}, "rewards": [], "training": {"attention": "auto", "early_stopping_patience": 0, "epochs": 2.0, "eval_split": 0.05, "eval_steps": 0, "grad_accum": 1, "gradient_checkpointing": "auto", "keep_best": false, "learning_rate": 0.0002, "liger_kernels": false, "lr_scheduler": "cosine", "max_seq_length": 256, "max_steps": 0, "micro_batch_size": 4, "packing": true, "precision": "auto", "report_to": "none", "save_minutes": 10.0, "save_steps": 50, "save_total_limit": 2, "seed": 42, "warmup_ratio": 0.03, "weight_decay": 0.0}}',NULL,'completed',NULL,'[]','cpu',1.796442071932828188e+09,1.79644207193424582484e+09,1.79644207193590235704e+09,3,NULL,1.0,NULL,NULL,3.99999999999999911182e-01,1.0,0.0001,NULL,900.0,1.79644207193633055684e+09);
CREATE TABLE samples (
        run_id TEXT NOT NULL, idx INTEGER NOT NULL, prompt TEXT, response TEXT, reference TEXT,
        PRIMARY KEY (run_id, idx));
CREATE INDEX runs_created ON runs (created_at, id);
CREATE INDEX runs_name ON runs (name);
CREATE INDEX runs_state ON runs (state);
CREATE INDEX events_kind ON events (run_id, kind, ts);
CREATE INDEX events_ts ON events (run_id, ts, seq);
CREATE INDEX metrics_ts ON metrics (run_id, ts);
CREATE INDEX evals_ts ON evals (run_id, ts);
CREATE INDEX artifacts_run ON artifacts (run_id, created_at);
CREATE INDEX commands_open ON commands (taken_at, id);
DELETE FROM "sqlite_sequence";
COMMIT;
