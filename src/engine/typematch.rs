//! Link type compatibility (ComfyUI's `validate_node_input`, non-strict).

/// Whether an output of type `received` may feed an input declared as `declared`.
pub fn types_match(received: &str, declared: &str) -> bool {
    if received == declared || received == "*" || declared == "*" {
        return true;
    }
    if received == "COMFY_MATCHTYPE_V3" || declared == "COMFY_MATCHTYPE_V3" {
        return true;
    }
    let split = |s: &str| -> Vec<String> { s.split(',').map(|t| t.trim().to_string()).collect() };
    let (r, d) = (split(received), split(declared));
    if r.iter().any(|t| t == "*") || d.iter().any(|t| t == "*") {
        return true;
    }
    r.iter().any(|t| d.contains(t))
}

#[cfg(test)]
mod tests {
    use super::types_match;

    // Cases from ComfyUI's tests-unit/execution_test/validate_node_input_test.py.
    #[test]
    fn matches_comfyui_rules() {
        assert!(types_match("STRING", "STRING"));
        assert!(!types_match("STRING", "INT"));
        assert!(types_match("", ""));
        assert!(!types_match("STRING", ""));
        assert!(types_match("*", "INT"));
        assert!(types_match("INT", "*"));
        assert!(types_match("INT", "STRING,INT"));
        assert!(types_match("STRING,INT", "INT"));
        assert!(types_match(" INT , FLOAT", "FLOAT"));
        assert!(!types_match("INT,FLOAT", "STRING,BOOLEAN"));
        assert!(types_match("INT,*", "STRING"));
        assert!(types_match("IMAGE,FLOAT", "FLOAT"));
        assert!(!types_match("MASK", "IMAGE,FLOAT"));
    }
}
