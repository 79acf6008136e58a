//! Prompts the way a HuggingFace checkpoint wants them: its chat template, its BOS token and
//! its stop tokens, read from `tokenizer_config.json` (or `chat_template.jinja`) and
//! `generation_config.json` beside `tokenizer.json`. Chat templates are Jinja; they are rendered with `minijinja` under the
//! settings of HuggingFace's `apply_chat_template` (blocks trimmed and left-stripped,
//! Python's string and dict methods, `raise_exception`), with `messages`,
//! `add_generation_prompt`, `bos_token` and `eos_token` in the context.
//!
//! Text ↔ ids is the caller's (this crate has no tokenizer): [`PromptFormat::special_tokens`]
//! takes the tokenizer's token → id lookup, and [`SpecialTokens::prompt`] the ids of the
//! rendered text.
//!
//! ```
//! use dsa_model::chat::{ChatMessage, PromptFormat};
//!
//! let format = PromptFormat::from_json(
//!     r#"{"chat_template": "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}",
//!         "bos_token": {"content": "<s>"}, "eos_token": "</s>", "add_bos_token": true}"#,
//!     Some(r#"{"eos_token_id": [2, 7]}"#),
//! )?;
//! let text = format.render(&[ChatMessage::new("user", "Hi")], true)?;
//! assert_eq!(text, "<s><user>Hi<assistant>");
//!
//! // A toy vocabulary: the tokenizer's token → id lookup.
//! let special = format.special_tokens(|token| match token { "<s>" => Some(1), "</s>" => Some(2), _ => None })?;
//! assert_eq!(special.stop, [2, 7]);
//! // BOS goes in front of a prompt, once.
//! assert_eq!(special.prompt(vec![5, 6]), [1, 5, 6]);
//! assert_eq!(special.prompt(vec![1, 5, 6]), [1, 5, 6]);
//! # Ok::<(), String>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::{Environment, Error, ErrorKind, Value};
use serde::{Deserialize, Serialize};

/// The tokenizer configuration file of a HuggingFace checkpoint.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
/// The generation defaults file of a HuggingFace checkpoint.
pub const GENERATION_CONFIG_FILE: &str = "generation_config.json";
/// The chat template file of newer HuggingFace checkpoints; it replaces the `chat_template`
/// of `tokenizer_config.json`, as in `transformers`.
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";

/// One message of a conversation, as chat templates see it (`message.role`,
/// `message.content`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant` (what the template accepts).
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message of `role`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}

/// What `tokenizer_config.json` says about prompts (its other fields are ignored).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct TokenizerConfig {
    /// The chat template(s).
    #[serde(default)]
    pub chat_template: Option<ChatTemplates>,
    /// The beginning-of-sequence token.
    #[serde(default)]
    pub bos_token: Option<SpecialToken>,
    /// The end-of-sequence token.
    #[serde(default)]
    pub eos_token: Option<SpecialToken>,
    /// Whether a prompt starts with `bos_token` (absent: no).
    #[serde(default)]
    pub add_bos_token: Option<bool>,
}

/// `chat_template`: one template, or named ones (the `default` is used for chat).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged, expecting = "expected a string or a list of {\"name\": ..., \"template\": ...} objects")]
pub enum ChatTemplates {
    /// A single template.
    One(String),
    /// Named templates, e.g. `default` and `tool_use`.
    Named(Vec<NamedTemplate>),
}

/// One of several named chat templates.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct NamedTemplate {
    /// Its name.
    pub name: String,
    /// The Jinja source.
    pub template: String,
}

/// A special token: its text, or the `AddedToken` object form (`{"content": ..., ...}`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged, expecting = "expected a string or an object with a \"content\" string")]
pub enum SpecialToken {
    /// The token's text.
    Text(String),
    /// An `AddedToken` object; only its text matters here.
    Added {
        /// The token's text.
        content: String,
    },
}

impl SpecialToken {
    /// The token's text.
    pub fn content(&self) -> &str {
        match self {
            SpecialToken::Text(text) | SpecialToken::Added { content: text } => text,
        }
    }
}

/// What `generation_config.json` says about special tokens (its other fields are ignored).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct GenerationConfig {
    /// Token(s) that end generation.
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    /// The beginning-of-sequence token.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
}

/// One token id or several.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged, expecting = "expected a token id or a list of token ids")]
pub enum TokenIds {
    /// One id.
    One(u32),
    /// Several ids.
    Many(Vec<u32>),
}

impl TokenIds {
    /// The ids.
    pub fn ids(&self) -> &[u32] {
        match self {
            TokenIds::One(id) => std::slice::from_ref(id),
            TokenIds::Many(ids) => ids,
        }
    }
}

/// A checkpoint's prompt conventions: its tokenizer and generation configurations, and
/// where they came from (named in errors).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PromptFormat {
    /// `tokenizer_config.json`.
    pub tokenizer: TokenizerConfig,
    /// `generation_config.json`.
    pub generation: GenerationConfig,
    /// The `tokenizer_config.json` read (named in errors).
    pub tokenizer_file: PathBuf,
    /// The `generation_config.json` read (named in errors).
    pub generation_file: PathBuf,
    /// Where the chat template comes from (named in errors).
    pub template_file: PathBuf,
}

/// The token ids a prompt format resolves to with a tokenizer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    /// The token put in front of every prompt, if the tokenizer config asks for one.
    pub bos: Option<u32>,
    /// The tokens that end generation: `eos_token` and `generation_config.json`'s
    /// `eos_token_id`s, each once.
    pub stop: Vec<u32>,
}

impl SpecialTokens {
    /// `tokens` with [`Self::bos`] in front, unless they already start with it (a chat
    /// template that writes `bos_token` itself).
    pub fn prompt(&self, mut tokens: Vec<u32>) -> Vec<u32> {
        if let Some(bos) = self.bos {
            if tokens.first() != Some(&bos) {
                tokens.insert(0, bos);
            }
        }
        tokens
    }
}

/// Parses `text`, the contents of `file`, naming the file and the field in errors.
fn parse<T: for<'de> Deserialize<'de>>(text: &str, file: &Path) -> Result<T, String> {
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(text)).map_err(|e| {
        let field = e.path().to_string();
        match field.as_str() {
            "." | "?" => format!("{}: {}", file.display(), e.inner()),
            _ => format!("{}: field `{field}`: {}", file.display(), e.inner()),
        }
    })
}

impl PromptFormat {
    /// The prompt format of the checkpoint directory `dir`: `tokenizer_config.json`,
    /// `chat_template.jinja` and `generation_config.json`, each optional (absent: no
    /// template, no BOS, no stop tokens of its own).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, String> {
        let dir = dir.as_ref();
        let read = |name: &str| {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok((Some(text), path)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((None, path)),
                Err(e) => Err(format!("cannot read {}: {e}", path.display())),
            }
        };
        let (tokenizer, tokenizer_file) = read(TOKENIZER_CONFIG_FILE)?;
        let (generation, generation_file) = read(GENERATION_CONFIG_FILE)?;
        let mut format = Self {
            tokenizer: tokenizer.map(|t| parse(&t, &tokenizer_file)).transpose()?.unwrap_or_default(),
            generation: generation.map(|g| parse(&g, &generation_file)).transpose()?.unwrap_or_default(),
            template_file: tokenizer_file.clone(),
            tokenizer_file,
            generation_file,
        };
        if let (Some(template), file) = read(CHAT_TEMPLATE_FILE)? {
            format.set_chat_template(template, file);
        }
        Ok(format)
    }

    /// Uses `template`, read from `file`, as the chat template.
    pub fn set_chat_template(&mut self, template: String, file: PathBuf) {
        self.tokenizer.chat_template = Some(ChatTemplates::One(template));
        self.template_file = file;
    }

    /// The prompt format of the texts of a `tokenizer_config.json` and, if there is one, a
    /// `generation_config.json`.
    ///
    /// ```
    /// use dsa_model::chat::PromptFormat;
    /// let err = PromptFormat::from_json(r#"{"eos_token": 5}"#, None).unwrap_err();
    /// assert!(err.starts_with("tokenizer_config.json: field `eos_token`: "), "{err}");
    /// ```
    pub fn from_json(tokenizer_config: &str, generation_config: Option<&str>) -> Result<Self, String> {
        let (tokenizer_file, generation_file) = (PathBuf::from(TOKENIZER_CONFIG_FILE), PathBuf::from(GENERATION_CONFIG_FILE));
        Ok(Self {
            tokenizer: parse(tokenizer_config, &tokenizer_file)?,
            generation: generation_config.map(|g| parse(g, &generation_file)).transpose()?.unwrap_or_default(),
            template_file: tokenizer_file.clone(),
            tokenizer_file,
            generation_file,
        })
    }

    /// The chat template: the only one, or the one named `default`.
    pub fn chat_template(&self) -> Result<&str, String> {
        let file = self.tokenizer_file.display();
        match &self.tokenizer.chat_template {
            None => Err(format!("{file} has no `chat_template` (nor is there a {CHAT_TEMPLATE_FILE} beside it)")),
            Some(ChatTemplates::One(template)) => Ok(template),
            Some(ChatTemplates::Named(named)) => named.iter().find(|t| t.name == "default").map(|t| t.template.as_str()).ok_or_else(|| {
                let names: Vec<&str> = named.iter().map(|t| t.name.as_str()).collect();
                format!("{file}: `chat_template` has no template named `default` (it has {names:?})")
            }),
        }
    }

    /// `messages` in the chat template, followed by the start of the assistant's turn when
    /// `add_generation_prompt`.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, String> {
        let bos = self.tokenizer.bos_token.as_ref().map(SpecialToken::content);
        let eos = self.tokenizer.eos_token.as_ref().map(SpecialToken::content);
        render_chat(self.chat_template()?, messages, add_generation_prompt, bos, eos)
            .map_err(|e| format!("the chat template in {}: {e}", self.template_file.display()))
    }

    /// The BOS and stop token ids, `token_id` giving the id of a token's text (the
    /// tokenizer's vocabulary, added tokens included).
    pub fn special_tokens(&self, token_id: impl Fn(&str) -> Option<u32>) -> Result<SpecialTokens, String> {
        let tokenizer_file = self.tokenizer_file.display();
        let id = |field: &str, token: &SpecialToken| {
            token_id(token.content()).ok_or_else(|| format!("{tokenizer_file}: `{field}` {:?} is not a token of the tokenizer", token.content()))
        };
        let bos = match (self.tokenizer.add_bos_token, &self.tokenizer.bos_token, self.generation.bos_token_id) {
            (Some(true), Some(token), _) => Some(id("bos_token", token)?),
            (Some(true), None, Some(bos)) => Some(bos),
            (Some(true), None, None) => {
                return Err(format!("{tokenizer_file}: `add_bos_token` is true but there is no `bos_token` (nor a `bos_token_id` in {})", self.generation_file.display()));
            }
            _ => None,
        };
        let mut stop = Vec::new();
        let eos = self.tokenizer.eos_token.as_ref().map(|t| id("eos_token", t)).transpose()?;
        for token in eos.iter().chain(self.generation.eos_token_id.iter().flat_map(TokenIds::ids)) {
            if !stop.contains(token) {
                stop.push(*token);
            }
        }
        Ok(SpecialTokens { bos, stop })
    }
}

/// Renders the Jinja chat `template` for `messages` as HuggingFace's `apply_chat_template`
/// does: blocks trimmed and left-stripped, Python's string and dict methods
/// (`minijinja_contrib::pycompat`), `raise_exception(message)` an error; `bos_token` and
/// `eos_token` are defined when given.
///
/// ```
/// use dsa_model::chat::{render_chat, ChatMessage};
/// let template = "{% for m in messages %}{% if m.role not in ['user', 'assistant'] %}\
///     {{ raise_exception('unknown role ' + m.role) }}{% endif %}\
///     [{{ m.role.upper() }}] {{ m.content.strip() }}\n{% endfor %}";
/// let text = render_chat(template, &[ChatMessage::new("user", " Hi ")], false, None, None)?;
/// assert_eq!(text, "[USER] Hi\n");
/// let err = render_chat(template, &[ChatMessage::new("tool", "")], false, None, None).unwrap_err();
/// assert!(err.contains("unknown role tool"), "{err}");
/// # Ok::<(), String>(())
/// ```
pub fn render_chat(template: &str, messages: &[ChatMessage], add_generation_prompt: bool, bos_token: Option<&str>, eos_token: Option<&str>) -> Result<String, String> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |message: String| -> Result<Value, Error> { Err(Error::new(ErrorKind::InvalidOperation, message)) });
    let mut context = BTreeMap::from([("messages", Value::from_serialize(messages)), ("add_generation_prompt", Value::from(add_generation_prompt))]);
    for (name, token) in [("bos_token", bos_token), ("eos_token", eos_token)] {
        if let Some(token) = token {
            context.insert(name, Value::from(token));
        }
    }
    let describe = |e: Error| match e.detail() {
        Some(detail) => format!("{} ({detail}) at line {}", e.kind(), e.line().unwrap_or(0)),
        None => format!("{} at line {}", e.kind(), e.line().unwrap_or(0)),
    };
    env.template_from_str(template).and_then(|t| t.render(context)).map_err(describe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DEEPSEEK_V3_1: &str = include_str!("../testdata/chat_templates/deepseek-v3.1.jinja");
    const GLM_4_6: &str = include_str!("../testdata/chat_templates/glm-4.6.jinja");

    /// A two-turn conversation with a system prompt, waiting for the second reply.
    fn conversation() -> Vec<ChatMessage> {
        vec![ChatMessage::new("system", "You are terse."), ChatMessage::new("user", "Hi"), ChatMessage::new("assistant", "Hello!"), ChatMessage::new("user", "2+2?")]
    }

    /// DeepSeek-V3.1's template (its `tokenizer_config.json`, special tokens in the
    /// `AddedToken` object form) and GLM-4.6's (string form, a list of EOS ids in
    /// `generation_config.json`) render a two-turn conversation as the templates mean it.
    /// The expected strings are written from the templates' rules (and were checked with
    /// Python's jinja2 under HuggingFace's settings).
    #[test]
    fn real_templates_render_a_two_turn_conversation() {
        let added = |content: &str| json!({"__type": "AddedToken", "content": content, "lstrip": false, "normalized": true, "rstrip": false, "single_word": false});
        let deepseek = json!({
            "add_bos_token": true, "add_eos_token": false, "bos_token": added("<｜begin▁of▁sentence｜>"),
            "eos_token": added("<｜end▁of▁sentence｜>"), "legacy": true, "model_max_length": 131072,
            "tokenizer_class": "LlamaTokenizerFast", "unk_token": null, "chat_template": DEEPSEEK_V3_1,
        });
        let format = PromptFormat::from_json(&deepseek.to_string(), Some(r#"{"bos_token_id": 0, "eos_token_id": 1, "do_sample": true}"#)).unwrap();
        // The system prompt after BOS; each user turn `<｜User｜>…`; the assistant's turn opens
        // with `<｜Assistant｜></think>` (thinking off) and closes with EOS; the generation
        // prompt opens the next one.
        let expected = "<｜begin▁of▁sentence｜>You are terse.<｜User｜>Hi<｜Assistant｜></think>Hello!<｜end▁of▁sentence｜><｜User｜>2+2?<｜Assistant｜></think>";
        assert_eq!(format.render(&conversation(), true).unwrap(), expected);
        let without_prompt = format.render(&conversation(), false).unwrap();
        assert_eq!(without_prompt, expected.strip_suffix("<｜Assistant｜></think>").unwrap());
        let vocab = |t: &str| match t { "<｜begin▁of▁sentence｜>" => Some(0), "<｜end▁of▁sentence｜>" => Some(1), _ => None };
        assert_eq!(format.special_tokens(vocab).unwrap(), SpecialTokens { bos: Some(0), stop: vec![1] });

        let glm = json!({"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "chat_template": GLM_4_6});
        let format = PromptFormat::from_json(&glm.to_string(), Some(r#"{"eos_token_id": [151329, 151336, 151338], "pad_token_id": 151329}"#)).unwrap();
        // `[gMASK]<sop>`, then each turn's role tag and a newline before its text; an
        // assistant's turn has an empty thinking block.
        let expected = "[gMASK]<sop><|system|>\nYou are terse.<|user|>\nHi<|assistant|>\n<think></think>\nHello!<|user|>\n2+2?<|assistant|>";
        assert_eq!(format.render(&conversation(), true).unwrap(), expected);
        let vocab = |t: &str| (t == "<|endoftext|>").then_some(151329);
        // No `add_bos_token`: no BOS; the EOS token once, then the other ids in order.
        let special = format.special_tokens(vocab).unwrap();
        assert_eq!(special, SpecialTokens { bos: None, stop: vec![151329, 151336, 151338] });
        assert_eq!(special.prompt(vec![3, 4]), [3, 4]);
    }

    /// Both templates drop the thinking of earlier assistant turns, with Python string
    /// methods (`split` with a limit, negative indices, `strip`s): the conversation renders
    /// as if the reply had been given without it.
    #[test]
    fn earlier_thinking_is_dropped() {
        let mut thought = conversation();
        thought[2].content = "<think>\nHmm.\n</think>Hello!".into();
        let deepseek = json!({"bos_token": "<｜begin▁of▁sentence｜>", "chat_template": DEEPSEEK_V3_1});
        let glm = json!({"chat_template": GLM_4_6});
        for config in [deepseek, glm] {
            let format = PromptFormat::from_json(&config.to_string(), None).unwrap();
            assert_eq!(format.render(&thought, true).unwrap(), format.render(&conversation(), true).unwrap());
        }
    }

    /// The list form of `chat_template` uses the template named `default`; the stop tokens
    /// merge `eos_token` and a single `eos_token_id`.
    #[test]
    fn named_templates_and_token_forms() {
        let config = json!({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D{{ eos_token }}"}], "eos_token": "</s>", "bos_token": "<s>", "add_bos_token": true});
        let format = PromptFormat::from_json(&config.to_string(), Some(r#"{"eos_token_id": 9}"#)).unwrap();
        assert_eq!(format.render(&[], false).unwrap(), "D</s>");
        let special = format.special_tokens(|t| [("<s>", 1), ("</s>", 2)].iter().find(|(s, _)| *s == t).map(|&(_, id)| id)).unwrap();
        assert_eq!(special, SpecialTokens { bos: Some(1), stop: vec![2, 9] });
        assert_eq!(special.prompt(vec![]), [1]);
        // Without a `bos_token`, `add_bos_token` takes generation_config.json's id.
        let format = PromptFormat::from_json(r#"{"add_bos_token": true}"#, Some(r#"{"bos_token_id": 4}"#)).unwrap();
        assert_eq!(format.special_tokens(|_| None).unwrap(), SpecialTokens { bos: Some(4), stop: vec![] });

        let only_tools = json!({"chat_template": [{"name": "tool_use", "template": "T"}]});
        let err = PromptFormat::from_json(&only_tools.to_string(), None).unwrap().render(&[], true).unwrap_err();
        assert_eq!(err, "tokenizer_config.json: `chat_template` has no template named `default` (it has [\"tool_use\"])");
    }

    /// Bad files and fields are errors naming the file and the field.
    #[test]
    fn errors_name_the_file_and_field() {
        let cases = [
            (r#"{"chat_template": 3}"#, None, "tokenizer_config.json: field `chat_template`: expected a string or a list of {\"name\": ..., \"template\": ...} objects"),
            (r#"{"bos_token": {"lstrip": false}}"#, None, "tokenizer_config.json: field `bos_token`: expected a string or an object with a \"content\" string"),
            (r#"{"add_bos_token": "yes"}"#, None, "tokenizer_config.json: field `add_bos_token`: invalid type: string \"yes\", expected a boolean"),
            ("{}", Some(r#"{"eos_token_id": [1, "2"]}"#), "generation_config.json: field `eos_token_id`: expected a token id or a list of token ids"),
            ("{", None, "tokenizer_config.json: EOF while parsing"),
        ];
        for (tokenizer, generation, message) in cases {
            let err = PromptFormat::from_json(tokenizer, generation).unwrap_err();
            assert!(err.starts_with(message), "{tokenizer} {generation:?}: {err}");
        }
        let format = PromptFormat::from_json(r#"{"eos_token": "</s>", "add_bos_token": true}"#, None).unwrap();
        assert_eq!(format.render(&[], true).unwrap_err(), "tokenizer_config.json has no `chat_template` (nor is there a chat_template.jinja beside it)");
        assert_eq!(format.special_tokens(|_| Some(0)).unwrap_err(), "tokenizer_config.json: `add_bos_token` is true but there is no `bos_token` (nor a `bos_token_id` in generation_config.json)");
        let format = PromptFormat::from_json(r#"{"eos_token": "</s>", "chat_template": "{% if %}"}"#, None).unwrap();
        assert_eq!(format.special_tokens(|_| None).unwrap_err(), "tokenizer_config.json: `eos_token` \"</s>\" is not a token of the tokenizer");
        assert!(format.render(&[], true).unwrap_err().starts_with("the chat template in tokenizer_config.json: syntax error"));

        // From a directory: absent files are no template, a bad one is named by its path;
        // chat_template.jinja replaces tokenizer_config.json's template.
        let dir = std::env::temp_dir().join(format!("dsa-chat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(PromptFormat::from_dir(&dir).unwrap().tokenizer, TokenizerConfig::default());
        std::fs::write(dir.join(TOKENIZER_CONFIG_FILE), r#"{"chat_template": "config"}"#).unwrap();
        assert_eq!(PromptFormat::from_dir(&dir).unwrap().render(&[], true).unwrap(), "config");
        std::fs::write(dir.join(CHAT_TEMPLATE_FILE), "jinja {% if %}").unwrap();
        let err = PromptFormat::from_dir(&dir).unwrap().render(&[], true).unwrap_err();
        assert!(err.starts_with(&format!("the chat template in {}: syntax error", dir.join(CHAT_TEMPLATE_FILE).display())), "{err}");
        std::fs::write(dir.join(GENERATION_CONFIG_FILE), r#"{"eos_token_id": -1}"#).unwrap();
        let err = PromptFormat::from_dir(&dir).unwrap_err();
        assert!(err.starts_with(&format!("{}: field `eos_token_id`: ", dir.join(GENERATION_CONFIG_FILE).display())), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
