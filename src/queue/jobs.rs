//! The jobs view of queue and history that current frontends (1.3x) read through
//! `/api/jobs` (upstream `comfy_execution/jobs.py`): one flat record per prompt with its
//! state, times and a preview output.

use std::borrow::Cow;

use serde_json::{json, Map, Value as Json};

use super::QueueItem;

pub const PENDING: &str = "pending";
pub const IN_PROGRESS: &str = "in_progress";
pub const COMPLETED: &str = "completed";
pub const FAILED: &str = "failed";
pub const CANCELLED: &str = "cancelled";
pub const ALL_STATUSES: [&str; 5] = [PENDING, IN_PROGRESS, COMPLETED, FAILED, CANCELLED];

const PREVIEWABLE_MEDIA: [&str; 5] = ["images", "video", "audio", "3d", "text"];
const THREE_D_EXTENSIONS: [&str; 5] = [".obj", ".fbx", ".gltf", ".glb", ".usdz"];
const TEXT_EXTENSIONS: [&str; 3] = [".txt", ".md", ".json"];
const TEXT_PREVIEW_MAX_CHARS: usize = 1024;

/// How `/api/jobs` orders its list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortBy {
    CreatedAt,
    ExecutionDuration,
}

/// Object without its null values (upstream's `prune_dict`).
fn pruned(pairs: Vec<(&str, Json)>) -> Json {
    Json::Object(
        pairs
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

fn ends_with_any(name: &str, extensions: &[&str]) -> bool {
    let lower = name.to_lowercase();
    extensions.iter().any(|e| lower.ends_with(e))
}

/// `(create_time, workflow_id)` from a prompt's `extra_data`.
fn metadata(extra_data: &Json) -> (Json, Json) {
    let create_time = extra_data.get("create_time").cloned().unwrap_or(Json::Null);
    let workflow_id = extra_data
        .pointer("/extra_pnginfo/workflow/id")
        .cloned()
        .unwrap_or(Json::Null);
    (create_time, workflow_id)
}

/// A queued or running prompt as a job.
pub fn queue_job(item: &QueueItem, status: &str) -> Json {
    let (create_time, workflow_id) = metadata(&item.extra_data);
    pruned(vec![
        ("id", json!(item.prompt_id)),
        ("status", json!(status)),
        ("priority", item.number.clone()),
        ("create_time", create_time),
        ("outputs_count", json!(0)),
        ("previewable_outputs_count", json!(0)),
        ("workflow_id", workflow_id),
    ])
}

/// A finished prompt's history entry as a job; `full` adds outputs, raw status and workflow.
pub fn history_job(prompt_id: &str, entry: &Json, full: bool) -> Json {
    let tuple = &entry["prompt"];
    let (create_time, workflow_id) = metadata(&tuple[3]);
    let status_info = &entry["status"];
    let no_outputs = json!({});
    let outputs = entry.get("outputs").unwrap_or(&no_outputs);
    let (outputs_count, preview) = outputs_summary(outputs);

    let (mut start, mut end, mut error, mut interrupted) =
        (Json::Null, Json::Null, Json::Null, false);
    for message in status_info["messages"].as_array().into_iter().flatten() {
        let (Some(name), Some(data)) = (message[0].as_str(), message.get(1)) else {
            continue;
        };
        if !data.is_object() {
            continue;
        }
        let timestamp = data.get("timestamp").cloned().unwrap_or(Json::Null);
        match name {
            "execution_start" => start = timestamp,
            "execution_success" => end = timestamp,
            "execution_error" => {
                end = timestamp;
                error = data.clone();
            }
            "execution_interrupted" => {
                end = timestamp;
                interrupted = true;
            }
            _ => {}
        }
    }
    let status = match status_info["status_str"].as_str() {
        Some("error") if interrupted => CANCELLED,
        Some("error") => FAILED,
        _ => COMPLETED,
    };
    let mut job = pruned(vec![
        ("id", json!(prompt_id)),
        ("status", json!(status)),
        ("priority", tuple[0].clone()),
        ("create_time", create_time),
        ("execution_start_time", start),
        ("execution_end_time", end),
        ("execution_error", error),
        ("outputs_count", json!(outputs_count)),
        (
            "previewable_outputs_count",
            json!(previewable_count(outputs)),
        ),
        ("preview_output", preview),
        ("workflow_id", workflow_id),
    ]);
    if full {
        job["outputs"] = normalize_outputs(outputs);
        job["execution_status"] = status_info.clone();
        job["workflow"] = json!({"prompt": tuple[2], "extra_data": tuple[3]});
    }
    job
}

/// A string naming a 3D file becomes a file item; other strings are not files.
fn file_item(item: &Json) -> Option<Cow<'_, Json>> {
    match item {
        Json::Object(_) => Some(Cow::Borrowed(item)),
        Json::String(name) if ends_with_any(name, &THREE_D_EXTENSIONS) => Some(Cow::Owned(
            json!({"filename": name, "type": "output", "subfolder": "", "mediaType": "3d"}),
        )),
        _ => None,
    }
}

/// The per-node media lists, skipping `animated` flags and non-list values.
fn media_lists(outputs: &Json) -> impl Iterator<Item = (&String, &String, &Vec<Json>)> {
    outputs
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(node, o)| Some((node, o.as_object()?)))
        .flat_map(|(node, o)| {
            o.iter().filter_map(move |(media, items)| {
                (media != "animated")
                    .then_some(())
                    .and(items.as_array())
                    .map(|items| (node, media, items))
            })
        })
}

fn normalize_outputs(outputs: &Json) -> Json {
    let Some(nodes) = outputs.as_object() else {
        return outputs.clone();
    };
    let mut out = Map::new();
    for (node, value) in nodes {
        let Some(media) = value.as_object() else {
            out.insert(node.clone(), value.clone());
            continue;
        };
        let mut normalized = Map::new();
        for (kind, items) in media {
            let items = match items.as_array() {
                Some(list) if kind != "animated" => Json::Array(
                    list.iter()
                        .filter(|i| !i.is_null())
                        .map(|i| file_item(i).unwrap_or(Cow::Borrowed(i)).into_owned())
                        .collect(),
                ),
                _ => items.clone(),
            };
            normalized.insert(kind.clone(), items);
        }
        out.insert(node.clone(), Json::Object(normalized));
    }
    Json::Object(out)
}

fn is_previewable(media: &str, item: &Json) -> bool {
    let format = item.get("format").and_then(Json::as_str).unwrap_or("");
    let filename = item.get("filename").and_then(Json::as_str).unwrap_or("");
    PREVIEWABLE_MEDIA.contains(&media)
        || format.starts_with("video/")
        || format.starts_with("audio/")
        || ends_with_any(filename, &THREE_D_EXTENSIONS)
        || ends_with_any(filename, &TEXT_EXTENSIONS)
}

fn is_text(media: &str, item: &Json) -> bool {
    let filename = item.get("filename").and_then(Json::as_str).unwrap_or("");
    media == "text" || ends_with_any(filename, &TEXT_EXTENSIONS)
}

/// Counts output items and picks the preview the frontend shows: a saved visual output,
/// else any visual one, else a saved text file, else raw text.
fn outputs_summary(outputs: &Json) -> (usize, Json) {
    let mut count = 0;
    let (mut saved, mut visual, mut text_file, mut raw_text) = (None, None, None, None);
    for (node, media, items) in media_lists(outputs) {
        for item in items {
            let Some(item) = file_item(item) else {
                if media == "text" && raw_text.is_none() && !item.is_null() {
                    let value = match item {
                        Json::Array(a) => a.first().map(crate::pyjson::value_str),
                        other => Some(crate::pyjson::value_str(other)),
                    }
                    .unwrap_or_default();
                    let mut preview = match value.char_indices().nth(TEXT_PREVIEW_MAX_CHARS) {
                        Some((cut, _)) => json!({"content": &value[..cut], "truncated": true}),
                        None => json!({"content": value}),
                    };
                    preview["nodeId"] = json!(node);
                    preview["mediaType"] = json!(media);
                    raw_text = Some(preview);
                }
                continue;
            };
            count += 1;
            if saved.is_some() || !is_previewable(media, &item) {
                continue;
            }
            let mut enriched = item.clone().into_owned();
            enriched["nodeId"] = json!(node);
            if item.get("mediaType").is_none() {
                enriched["mediaType"] = json!(media);
            }
            if is_text(media, &item) {
                text_file.get_or_insert(enriched);
            } else if item.get("type").and_then(Json::as_str) == Some("output") {
                saved = Some(enriched);
            } else {
                visual.get_or_insert(enriched);
            }
        }
    }
    let preview = saved.or(visual).or(text_file).or(raw_text);
    (count, preview.unwrap_or(Json::Null))
}

/// Items the expanded asset view renders (every previewable file item).
fn previewable_count(outputs: &Json) -> usize {
    media_lists(outputs)
        .flat_map(|(_, media, items)| items.iter().map(move |i| (media, i)))
        .filter_map(|(media, i)| Some((media, file_item(i)?)))
        .filter(|(media, i)| is_previewable(media, i))
        .count()
}

/// Sorts jobs as upstream's `apply_sorting` does (missing values count as 0).
pub fn sort(jobs: &mut [Json], by: SortBy, descending: bool) {
    let key = |job: &Json| -> f64 {
        let field = |k: &str| job.get(k).and_then(Json::as_f64).unwrap_or(0.0);
        match by {
            SortBy::CreatedAt => field("create_time"),
            SortBy::ExecutionDuration => {
                let (start, end) = (field("execution_start_time"), field("execution_end_time"));
                if start != 0.0 && end != 0.0 {
                    end - start
                } else {
                    0.0
                }
            }
        }
    };
    // Stable either way: like Python's sorted(reverse=True), ties keep their order.
    if descending {
        jobs.sort_by(|a, b| key(b).total_cmp(&key(a)));
    } else {
        jobs.sort_by(|a, b| key(a).total_cmp(&key(b)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(outputs: Json, messages: Json, status: &str) -> Json {
        json!({
            "prompt": [3, "p", {}, {"create_time": 1000, "extra_pnginfo": {"workflow": {"id": "w"}}}, ["9"]],
            "outputs": outputs,
            "status": {"status_str": status, "completed": status == "success", "messages": messages},
            "meta": {},
        })
    }

    #[test]
    fn saved_image_outranks_temp_and_text() {
        let outputs = json!({
            "1": {"text": ["hello"]},
            "2": {"images": [{"filename": "t.png", "subfolder": "", "type": "temp"}]},
            "3": {"images": [{"filename": "o.png", "subfolder": "", "type": "output"}], "animated": [false]},
        });
        let messages = json!([["execution_start", {"prompt_id": "p", "timestamp": 5}],
                              ["execution_success", {"prompt_id": "p", "timestamp": 9}]]);
        let job = history_job("p", &entry(outputs, messages, "success"), false);
        assert_eq!(
            job,
            json!({"id": "p", "status": "completed", "priority": 3, "create_time": 1000,
                   "execution_start_time": 5, "execution_end_time": 9, "outputs_count": 2,
                   "previewable_outputs_count": 2,
                   "preview_output": {"filename": "o.png", "subfolder": "", "type": "output",
                                      "nodeId": "3", "mediaType": "images"},
                   "workflow_id": "w"})
        );
    }

    #[test]
    fn interrupted_error_is_cancelled_and_plain_error_failed() {
        let interrupted = json!([["execution_interrupted", {"timestamp": 7}]]);
        let job = history_job("p", &entry(json!({}), interrupted, "error"), false);
        assert_eq!(job["status"], CANCELLED);
        let failed = json!([["execution_error", {"timestamp": 8, "exception_message": "boom"}]]);
        let job = history_job("p", &entry(json!({}), failed, "error"), true);
        assert_eq!(job["status"], FAILED);
        assert_eq!(job["execution_error"]["exception_message"], "boom");
        assert_eq!(job["workflow"]["prompt"], json!({}));
        assert!(job.get("preview_output").is_none());
    }

    #[test]
    fn raw_text_is_the_last_resort_and_truncated() {
        let long = "x".repeat(2000);
        let job = history_job(
            "p",
            &entry(json!({"5": {"text": [long]}}), json!([]), "success"),
            false,
        );
        assert_eq!(job["outputs_count"], 0);
        assert_eq!(job["preview_output"]["truncated"], true);
        assert_eq!(
            job["preview_output"]["content"].as_str().unwrap().len(),
            1024
        );
    }

    #[test]
    fn descending_sort_keeps_ties_in_order() {
        let mut jobs = vec![
            json!({"id": "a", "create_time": 1}),
            json!({"id": "b", "create_time": 2}),
            json!({"id": "c", "create_time": 1}),
        ];
        sort(&mut jobs, SortBy::CreatedAt, true);
        let ids: Vec<&str> = jobs.iter().map(|j| j["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["b", "a", "c"]);
    }
}
