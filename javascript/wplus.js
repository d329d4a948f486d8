// W+ Adapter panel: hover hints for every control, and double-click on a slider's label to reset it.
// Loaded by the WebUI for every page; only touches elements whose id starts with the panel's prefix.
(function() {
    "use strict";

    // element id suffix (after script_<tab>_w_adapter_) -> [hint, reset value or null]
    var WPLUS_CONTROLS = {
        "enabled": ["Turn the W+ identity branch on. Off: generation is exactly as without the extension.", null],
        "source": ["Where the identity comes from: a reference photo, an identity saved earlier, or a new fictional person from a seed.", null],
        "reference": ["A photo of the person. The face is detected, aligned like FFHQ, its background removed, then encoded by e4e into StyleGAN's W+ space.", null],
        "identity": ["An identity saved from this panel (models/identities). Also accepts the paper's N.pth W+ files.", null],
        "refresh_identities": ["Re-read the saved identities folder.", null],
        "seed": ["Seed of a fictional identity drawn from StyleGAN's mapping network.", null],
        "face_index": ["Which face to use when the photo has several: -1 = the largest, 0 = leftmost, 1 = next to the right...", null],
        "scale": ["λ: how strongly the identity is injected (0 = off, 1 = the paper's default). Lower it if the face overrides the prompt's style. Double-click to reset.", 1.0],
        "start": ["Delayed subject conditioning: the branch is off while the step is at or before this percentage of the steps, so the text lays out the scene first. Double-click to reset.", 20],
        "adapter": ["The W+ adapter weights (models folder). The default downloads on first use.", null],
        "refresh_adapters": ["Re-read the models folder for adapter files.", null],
        "source2": ["Optionally blend in a second identity.", null],
        "reference2": ["Photo of the second identity.", null],
        "identity2": ["Saved second identity.", null],
        "seed2": ["Seed of a fictional second identity.", null],
        "mix_mode": ["Global: one weight for the whole code. Per layer group: StyleGAN style mixing (coarse = pose and face shape, middle = features, fine = colours and details).", null],
        "mix": ["Weight of the second identity: 0 = first only, 1 = second only. Double-click to reset.", 0.5],
        "mix_coarse": ["Second identity's weight on coarse layers 0-3 (pose, face shape). Double-click to reset.", 0.5],
        "mix_middle": ["Second identity's weight on middle layers 4-7 (facial features). Double-click to reset.", 0.5],
        "mix_fine": ["Second identity's weight on fine layers 8-17 (colours, micro details). Double-click to reset.", 0.5],
        "reset_edits": ["Set every edit slider back to 0 (no edit).", null],
        "preview": ["Show the aligned face and StyleGAN's rendering of the edited code, without running diffusion.", null],
        "save_name": ["Name for the identity file (models/identities/NAME.safetensors).", null],
        "save": ["Save the current identity (with its edits and mix baked in) for reuse, the API and X/Y/Z plots.", null],
        "aligned": ["The face as the encoder sees it: FFHQ-aligned, background whitened.", null],
        "rendered": ["StyleGAN's rendering of the W+ code after edits and mixing: a preview of the face that is injected.", null],
    };
    var EDIT_HINT = "Edit direction in StyleGAN's W+ space; 0 = no edit. The scene stays the same, only the face changes. Double-click to reset.";
    var PREFIX_RE = /^script_(txt2img|img2img)_w_adapter_(.+)$/;

    function controlOf(id) {
        var m = PREFIX_RE.exec(id || "");
        if (!m) return null;
        var key = m[2];
        if (key.indexOf("edit_") === 0 && key !== "edits_accordion") return {key: key, hint: EDIT_HINT, reset: 0};
        var entry = WPLUS_CONTROLS[key];
        return entry ? {key: key, hint: entry[0], reset: entry[1]} : null;
    }

    function fireInput(input) {
        var e = new Event("input", {bubbles: true});
        Object.defineProperty(e, "target", {value: input});
        input.dispatchEvent(e);
    }

    function resetSlider(elem, value) {
        elem.querySelectorAll("input[type=range], input[type=number]").forEach(function(input) {
            input.value = value;
            fireInput(input);
        });
    }

    var ANY_CONTROL = "[id^=script_txt2img_w_adapter_], [id^=script_img2img_w_adapter_]";

    function decorate(elem) {
        var ctl = controlOf(elem.id);
        if (!ctl || elem.dataset.wplusDecorated) return;
        elem.dataset.wplusDecorated = "1";
        // an accordion (the enable switch): hint on its header only, not over everything inside it
        var header = elem.querySelector(":scope > .label-wrap");
        (header || elem).title = ctl.hint;
        // only this control's own nodes: an accordion's children are other controls with their own hints
        elem.querySelectorAll("label, span, button, input").forEach(function(node) {
            if (node.closest(ANY_CONTROL) === elem && !node.title) node.title = ctl.hint;
        });
        if (ctl.reset !== null && elem.querySelector("input[type=range]")) {
            var label = elem.querySelector("label, span") || elem;
            label.addEventListener("dblclick", function(ev) {
                ev.preventDefault();
                resetSlider(elem, ctl.reset);
            });
        }
    }

    function decorateAll() {
        var app = typeof gradioApp === "function" ? gradioApp() : document;
        app.querySelectorAll(ANY_CONTROL).forEach(decorate);
    }

    if (typeof onUiUpdate === "function") {
        onUiUpdate(decorateAll);
    } else {
        document.addEventListener("DOMContentLoaded", decorateAll);
    }
})();
