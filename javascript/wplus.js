// W+ Adapter panel: hover hints for every control, and double-click on a slider's label to reset it.
// Loaded by the WebUI for every page; only touches elements whose id starts with the panel's prefix.
// The hints and reset values are not written here: the panel serves them from its option schema
// (wplus/webui/options.py) as JSON in a hidden element carrying the data-wplus-controls attribute.
(function() {
    "use strict";

    var PREFIX_RE = /^script_(txt2img|img2img)_w_adapter_(.+)$/;
    var ANY_CONTROL = "[id^=script_txt2img_w_adapter_], [id^=script_img2img_w_adapter_]";
    var controls = null; // element id suffix -> [hint, reset value or null]

    function app() {
        return typeof gradioApp === "function" ? gradioApp() : document;
    }

    function loadControls() {
        var table = {};
        app().querySelectorAll("[data-wplus-controls]").forEach(function(elem) {
            try {
                var data = JSON.parse(elem.getAttribute("data-wplus-controls"));
                Object.keys(data).forEach(function(key) { table[key] = data[key]; });
            } catch (e) {
                console.warn("W+ Adapter: unreadable control hints", e);
            }
        });
        return Object.keys(table).length ? table : null;
    }

    function controlOf(id) {
        var m = PREFIX_RE.exec(id || "");
        if (!m || !controls) return null;
        var entry = controls[m[2]];
        return entry ? {key: m[2], hint: entry[0], reset: entry[1]} : null;
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
        controls = controls || loadControls();
        if (controls) app().querySelectorAll(ANY_CONTROL).forEach(decorate);
    }

    if (typeof onUiUpdate === "function") {
        onUiUpdate(decorateAll);
    } else {
        document.addEventListener("DOMContentLoaded", decorateAll);
    }
    // what a control's hint and reset value are (tests read it through node; handy in the console too)
    window.wplusControlOf = function(id) { controls = controls || loadControls(); return controlOf(id); };
})();
