//! `videosdgx run WORKFLOW.json`: validate and execute a workflow without a server, with a
//! progress bar on the terminal.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Map, Value as Json};

use crate::cli::Args;
use crate::engine::context::{EventSink, InterruptFlag, NodeEnv, Route};
use crate::engine::executor::{Executor, RunRequest};
use crate::engine::validate::validate_prompt;
use crate::pyjson;

struct TerminalSink {
    bar: ProgressBar,
    prompt: Map<String, Json>,
    errors: Mutex<Vec<String>>,
}

impl EventSink for TerminalSink {
    fn send(&self, kind: &str, data: Json, _route: Route) {
        match kind {
            "executing" => {
                let id = data["node"].as_str().unwrap_or("");
                let class = self
                    .prompt
                    .get(id)
                    .and_then(|n| n["class_type"].as_str())
                    .unwrap_or("");
                self.bar.set_position(0);
                self.bar.set_length(1);
                self.bar.set_message(format!("#{id} {class}"));
            }
            "progress" => {
                self.bar.set_length(data["max"].as_u64().unwrap_or(1));
                self.bar.set_position(data["value"].as_u64().unwrap_or(0));
            }
            "executed" => self.bar.println(format!(
                "node {}: {}",
                data["node"].as_str().unwrap_or(""),
                pyjson::dumps(&data["output"])
            )),
            "execution_error" => {
                self.errors
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!(
                        "node {} ({}): {}: {}",
                        data["node_id"].as_str().unwrap_or(""),
                        data["node_type"].as_str().unwrap_or(""),
                        data["exception_type"].as_str().unwrap_or(""),
                        data["exception_message"].as_str().unwrap_or("").trim_end()
                    ))
            }
            _ => {}
        }
    }
}

/// `videosdgx convert`: the API-format prompt of a workflow file, printed as JSON.
pub fn convert(args: &Args, workflow: &Path) -> Result<()> {
    let registry = crate::setup::registry(args);
    let (prompt, _) = load_prompt(workflow, &registry)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&Json::Object(prompt)).expect("JSON")
    );
    Ok(())
}

/// Reads an API- or UI-format workflow (also `{"prompt": …}` request bodies) as an API prompt.
pub fn load_prompt(
    path: &Path,
    registry: &crate::engine::registry::Registry,
) -> Result<(Map<String, Json>, Json)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let doc: Json =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    if crate::workflow_ui::is_ui_format(&doc) {
        let prompt = crate::workflow_ui::to_api(&doc, registry)?;
        return Ok((prompt, json!({"extra_pnginfo": {"workflow": doc}})));
    }
    let extra = doc.get("extra_data").cloned().unwrap_or(json!({}));
    match doc.get("prompt").cloned().unwrap_or(doc) {
        Json::Object(p) => Ok((p, extra)),
        _ => bail!("{} holds no workflow", path.display()),
    }
}

pub fn run(args: &Args, workflow: &Path) -> Result<()> {
    let paths = Arc::new(crate::setup::paths_from_args(args)?);
    let registry = Arc::new(crate::setup::registry(args));
    let env = Arc::new(NodeEnv {
        paths,
        disable_metadata: args.disable_metadata,
        previews: false,
        models: Arc::new(crate::setup::model_manager(args)),
    });
    let (mut prompt, extra_data) = load_prompt(workflow, &registry)?;
    crate::engine::replacements::apply(&mut prompt, &registry);
    let accepted = match validate_prompt(&registry, &env, &mut prompt, None) {
        Ok(a) => a,
        Err(e) => bail!(
            "the workflow failed validation:\n{}",
            serde_json::to_string_pretty(&e.body())?
        ),
    };
    if accepted
        .node_errors
        .as_object()
        .is_some_and(|e| !e.is_empty())
    {
        eprintln!(
            "some outputs will not run:\n{}",
            serde_json::to_string_pretty(&accepted.node_errors)?
        );
    }
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template("{msg:30} [{bar:40}] {pos}/{len} {elapsed}")?
            .progress_chars("=> "),
    );
    let sink = TerminalSink {
        bar,
        prompt: prompt.clone(),
        errors: Mutex::new(Vec::new()),
    };
    let _no_grad = tch::no_grad_guard();
    let mut executor = Executor::new(registry.clone(), env, crate::setup::cache_mode(args));
    let prompt_id = uuid::Uuid::new_v4().to_string();
    let req = RunRequest {
        prompt_id: &prompt_id,
        prompt: &prompt,
        extra_data: &extra_data,
        outputs: &accepted.outputs,
    };
    let result = executor.execute(&req, &sink, &InterruptFlag::default());
    sink.bar.finish_and_clear();
    if !result.success {
        let errors = sink
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n");
        bail!("the workflow failed: {errors}");
    }
    println!("{}", pyjson::dumps(&Json::Object(result.outputs)));
    Ok(())
}
