//! ComfyUI's folder layout (`folder_paths.py`): input/output/temp/user folders, the model
//! folders with their file extensions, `extra_model_paths.yaml`, and save-name numbering.

use std::fs;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use indexmap::IndexMap;

const PT_EXTENSIONS: &[&str] = &[
    ".ckpt",
    ".pt",
    ".pt2",
    ".bin",
    ".pth",
    ".safetensors",
    ".pkl",
    ".sft",
];

/// The model folder keys in ComfyUI's registration order, with legacy directory aliases.
const MODEL_FOLDERS: &[(&str, &[&str], &[&str])] = &[
    ("checkpoints", &["checkpoints"], PT_EXTENSIONS),
    ("configs", &["configs"], &[".yaml"]),
    ("loras", &["loras"], PT_EXTENSIONS),
    ("vae", &["vae"], PT_EXTENSIONS),
    ("text_encoders", &["text_encoders", "clip"], PT_EXTENSIONS),
    (
        "diffusion_models",
        &["unet", "diffusion_models"],
        PT_EXTENSIONS,
    ),
    ("clip_vision", &["clip_vision"], PT_EXTENSIONS),
    ("style_models", &["style_models"], PT_EXTENSIONS),
    ("embeddings", &["embeddings"], PT_EXTENSIONS),
    ("diffusers", &["diffusers"], &["folder"]),
    ("vae_approx", &["vae_approx"], PT_EXTENSIONS),
    ("controlnet", &["controlnet", "t2i_adapter"], PT_EXTENSIONS),
    ("gligen", &["gligen"], PT_EXTENSIONS),
    ("upscale_models", &["upscale_models"], PT_EXTENSIONS),
    (
        "latent_upscale_models",
        &["latent_upscale_models"],
        PT_EXTENSIONS,
    ),
    ("custom_nodes", &[], &[]),
    ("hypernetworks", &["hypernetworks"], PT_EXTENSIONS),
    ("photomaker", &["photomaker"], PT_EXTENSIONS),
    ("classifiers", &["classifiers"], &[""]),
    ("model_patches", &["model_patches"], PT_EXTENSIONS),
    ("audio_encoders", &["audio_encoders"], PT_EXTENSIONS),
    (
        "frame_interpolation",
        &["frame_interpolation"],
        PT_EXTENSIONS,
    ),
];

/// Legacy folder names that extra_model_paths.yaml may use.
fn canonical_folder(name: &str) -> &str {
    match name {
        "unet" => "diffusion_models",
        "clip" => "text_encoders",
        other => other,
    }
}

#[derive(Clone, Debug)]
pub struct ModelFolder {
    pub paths: Vec<PathBuf>,
    /// Allowed extensions; empty means every file.
    pub extensions: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Paths {
    pub base: PathBuf,
    pub input: PathBuf,
    pub output: PathBuf,
    pub temp: PathBuf,
    pub user: PathBuf,
    pub models: IndexMap<String, ModelFolder>,
}

/// Where a save node writes: ComfyUI's `get_save_image_path` result.
pub struct SaveTarget {
    pub folder: PathBuf,
    pub filename: String,
    pub counter: u64,
    pub subfolder: String,
}

impl Paths {
    pub fn new(base: &Path) -> Self {
        let base = absolute(base);
        let models_dir = base.join("models");
        let models = MODEL_FOLDERS
            .iter()
            .map(|(key, dirs, exts)| {
                let paths = if *key == "custom_nodes" {
                    vec![base.join("custom_nodes")]
                } else {
                    dirs.iter().map(|d| models_dir.join(d)).collect()
                };
                let folder = ModelFolder {
                    paths,
                    extensions: exts.iter().map(|e| e.to_string()).collect(),
                };
                (key.to_string(), folder)
            })
            .collect();
        Paths {
            input: base.join("input"),
            output: base.join("output"),
            temp: base.join("temp"),
            user: base.join("user"),
            base,
            models,
        }
    }

    /// Creates the folders a fresh install needs.
    pub fn create_dirs(&self) -> Result<()> {
        for dir in [&self.input, &self.output, &self.temp, &self.user] {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        for folder in self.models.values() {
            if let Some(first) = folder.paths.iter().find(|p| p.starts_with(&self.base)) {
                let _ = fs::create_dir_all(first);
            }
        }
        Ok(())
    }

    /// Adds the folders of a ComfyUI `extra_model_paths.yaml`.
    pub fn add_extra_model_paths(&mut self, yaml_file: &Path) -> Result<()> {
        let text = fs::read_to_string(yaml_file)
            .with_context(|| format!("reading {}", yaml_file.display()))?;
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
            .with_context(|| format!("parsing {}", yaml_file.display()))?;
        let yaml_dir = absolute(yaml_file.parent().unwrap_or(Path::new(".")));
        let Some(sections) = doc.as_mapping() else {
            return Ok(());
        };
        for (_, section) in sections {
            let Some(conf) = section.as_mapping() else {
                continue;
            };
            let mut base = yaml_dir.clone();
            if let Some(b) = conf.get("base_path").and_then(|v| v.as_str()) {
                base = yaml_dir.join(expand_home(b));
            }
            let is_default = conf
                .get("is_default")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            for (key, value) in conf {
                let Some(key) = key.as_str() else { continue };
                if matches!(key, "base_path" | "is_default" | "download_model_base") {
                    continue;
                }
                let Some(value) = value.as_str() else {
                    continue;
                };
                let folder = canonical_folder(key).to_string();
                for line in value.lines().map(str::trim).filter(|l| !l.is_empty()) {
                    let path = absolute(&base.join(expand_home(line)));
                    let entry = self
                        .models
                        .entry(folder.clone())
                        .or_insert_with(|| ModelFolder {
                            paths: Vec::new(),
                            extensions: Vec::new(),
                        });
                    if is_default {
                        entry.paths.insert(0, path);
                    } else {
                        entry.paths.push(path);
                    }
                }
            }
        }
        Ok(())
    }

    /// Files of a model folder, relative to its roots, sorted (ComfyUI's `get_filename_list`).
    pub fn filename_list(&self, folder: &str) -> Option<Vec<String>> {
        let spec = self.models.get(canonical_folder(folder))?;
        let mut names = Vec::new();
        for root in &spec.paths {
            collect_files(root, root, &mut names);
        }
        names.retain(|n| {
            spec.extensions.is_empty()
                || spec
                    .extensions
                    .iter()
                    .any(|e| !e.is_empty() && n.to_lowercase().ends_with(e.as_str()))
        });
        names.sort();
        names.dedup();
        Some(names)
    }

    /// The directories of a model folder (ComfyUI's `get_folder_paths`).
    pub fn folder_dirs(&self, folder: &str) -> Vec<PathBuf> {
        self.models
            .get(canonical_folder(folder))
            .map(|spec| spec.paths.clone())
            .unwrap_or_default()
    }

    /// The full path of a file listed in a model folder.
    pub fn full_path(&self, folder: &str, name: &str) -> Option<PathBuf> {
        let spec = self.models.get(canonical_folder(folder))?;
        if !is_relative_inside(name) {
            return None;
        }
        spec.paths
            .iter()
            .map(|root| root.join(name))
            .find(|p| p.is_file())
    }

    /// The directory of a `type` (`input`, `output`, `temp`).
    pub fn type_dir(&self, kind: &str) -> Option<&Path> {
        match kind {
            "input" => Some(&self.input),
            "output" => Some(&self.output),
            "temp" => Some(&self.temp),
            _ => None,
        }
    }

    /// Splits `name [input]`-style annotations: the folder and the bare name.
    pub fn annotated<'a>(&'a self, name: &'a str, default: &'a Path) -> (&'a Path, &'a str) {
        for kind in ["output", "input", "temp"] {
            if let Some(stripped) = name.strip_suffix(&format!(" [{kind}]")) {
                return (self.type_dir(kind).expect("known type"), stripped);
            }
        }
        (default, name)
    }

    /// The file an annotated input name points at, if it stays inside its folder.
    pub fn annotated_input_path(&self, name: &str) -> Option<PathBuf> {
        let (dir, name) = self.annotated(name, &self.input);
        if !is_relative_inside(name) {
            return None;
        }
        Some(dir.join(name))
    }

    /// Top-level image files of the input folder (the `LoadImage` choices), sorted.
    pub fn input_images(&self) -> Vec<String> {
        self.input_files_of(&["image"])
    }

    /// Top-level input files whose guessed content type is one of `kinds` (`image`, `video`, `audio`).
    pub fn input_files_of(&self, kinds: &[&str]) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.input) else {
            return Vec::new();
        };
        let mut files: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| {
                mime_guess::from_path(n)
                    .iter()
                    .any(|m| kinds.contains(&m.type_().as_str()))
            })
            .collect();
        files.sort();
        files
    }

    /// ComfyUI's `get_save_image_path`: the folder, stem and next counter for a prefix.
    pub fn save_target(
        &self,
        root: &Path,
        prefix: &str,
        width: i64,
        height: i64,
    ) -> Result<SaveTarget> {
        let prefix = prefix
            .replace("%width%", &width.to_string())
            .replace("%height%", &height.to_string());
        let normalized = normpath(&prefix);
        let (subfolder, filename) = match normalized.rsplit_once('/') {
            Some((dir, file)) => (dir.to_string(), file.to_string()),
            None => (String::new(), normalized.clone()),
        };
        if !is_relative_inside(&normalized) {
            bail!(
                "**** ERROR: Saving image outside the output folder is not allowed.\n full_output_folder: {}\n         output_dir: {}",
                root.join(&subfolder).display(),
                root.display()
            );
        }
        let folder = root.join(&subfolder);
        let counter = match fs::read_dir(&folder) {
            Ok(entries) => {
                let max = entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter_map(|name| counter_of(&name, &filename))
                    .max();
                max.map_or(1, |m| m + 1)
            }
            Err(_) => {
                fs::create_dir_all(&folder)?;
                1
            }
        };
        Ok(SaveTarget {
            folder,
            filename,
            counter,
            subfolder,
        })
    }
}

/// The number in `<stem>_00042_.png` (or `<stem>_00042.flac`) when the file belongs to `stem`.
fn counter_of(name: &str, stem: &str) -> Option<u64> {
    let rest = name.strip_prefix(stem)?.strip_prefix('_')?;
    let digits = rest.split('.').next()?.split('_').next()?;
    digits.parse().ok()
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        let name = entry.file_name();
        if name == ".git" {
            continue;
        }
        if path.is_dir() {
            collect_files(root, &path, out);
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
}

fn expand_home(p: &str) -> String {
    match (p.strip_prefix("~/"), std::env::var("HOME")) {
        (Some(rest), Ok(home)) => format!("{home}/{rest}"),
        _ => p.to_string(),
    }
}

/// An absolute, lexically normalised path (no symlink resolution, like `os.path.abspath`).
pub fn absolute(p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// `os.path.normpath` for a relative '/'-separated path.
pub fn normpath(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." if parts.last().is_some_and(|l| *l != "..") => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    if p.starts_with('/') {
        format!("/{joined}")
    } else {
        joined
    }
}

/// Whether a relative path stays inside the folder it is joined to.
pub fn is_relative_inside(p: &str) -> bool {
    let n = normpath(p);
    !(n.starts_with('/') || n == ".." || n.starts_with("../"))
}

/// Whether `path` lies inside `root` once symlinks are resolved where they exist.
pub fn resolves_inside(root: &Path, path: &Path) -> bool {
    let root = fs::canonicalize(root).unwrap_or_else(|_| absolute(root));
    let mut probe = absolute(path);
    let mut tail = Vec::new();
    // Resolve the longest existing prefix, so a new file's parent is still checked.
    while !probe.exists() {
        match (probe.file_name().map(|f| f.to_os_string()), probe.parent()) {
            (Some(name), Some(parent)) => {
                tail.push(name);
                probe = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut resolved = fs::canonicalize(&probe).unwrap_or(probe);
    for name in tail.into_iter().rev() {
        resolved.push(name);
    }
    resolved.starts_with(&root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normpath_and_containment() {
        assert_eq!(normpath("a/./b//c/../d"), "a/b/d");
        assert!(is_relative_inside("a/b"));
        assert!(!is_relative_inside("../a"));
        assert!(!is_relative_inside("a/../../b"));
        assert!(!is_relative_inside("/etc/passwd"));
    }

    #[test]
    fn save_counter_follows_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        fs::create_dir_all(paths.output.join("sub")).unwrap();
        fs::write(paths.output.join("sub/img_00007_.png"), b"").unwrap();
        fs::write(paths.output.join("sub/other_00009_.png"), b"").unwrap();
        let t = paths.save_target(&paths.output, "sub/img", 8, 8).unwrap();
        assert_eq!(
            (t.subfolder.as_str(), t.filename.as_str(), t.counter),
            ("sub", "img", 8)
        );
        assert!(paths.save_target(&paths.output, "../escape", 8, 8).is_err());
    }

    #[test]
    fn extra_model_paths_yaml() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("extra.yaml");
        fs::write(
            &yaml,
            "other:\n  base_path: shared\n  checkpoints: |\n    ckpts/\n    more/\n  unet: u/\n",
        )
        .unwrap();
        fs::create_dir_all(dir.path().join("shared/ckpts/sub")).unwrap();
        fs::write(dir.path().join("shared/ckpts/sub/m.safetensors"), b"x").unwrap();
        fs::write(dir.path().join("shared/ckpts/readme.txt"), b"x").unwrap();
        let mut paths = Paths::new(&dir.path().join("base"));
        paths.add_extra_model_paths(&yaml).unwrap();
        assert_eq!(
            paths.filename_list("checkpoints").unwrap(),
            vec!["sub/m.safetensors"]
        );
        assert!(paths.models["diffusion_models"]
            .paths
            .iter()
            .any(|p| p.ends_with("shared/u")));
    }
}
